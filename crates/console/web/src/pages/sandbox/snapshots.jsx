// A sandbox's snapshots (`GET /v1/snapshots?sandbox=`): take one with a
// name (with the operation's progress), restore one into the sandbox
// (asks first: its files are replaced), or fork: create new sandboxes
// from one (a name and a count, as `dwell create --from --count`).
import { useEffect, useState } from "preact/hooks";
import { get, post } from "../../api.js";
import { Link, navigate } from "../../router.jsx";
import { bytes, Confirm, Empty, ErrorBox, Loading, usePoll } from "../../ui.jsx";
import { createMany } from "../create.jsx";

/** The operation running on the sandbox, polled while `on`. */
function useProgress(id, on) {
  const [p, setP] = useState(null);
  useEffect(() => {
    if (!on) {
      setP(null);
      return undefined;
    }
    let live = true;
    const t = setInterval(async () => {
      try {
        const v = await get(`/v1/sandboxes/${encodeURIComponent(id)}/progress`);
        if (live) setP(v);
      } catch (_) {
        /* the operation's own answer reports failures */
      }
    }, 1000);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, [id, on]);
  return p;
}

export default function Snapshots({ sb, onChange }) {
  const { data, error, loading, reload } = usePoll(() => get("/v1/snapshots", { sandbox: sb.id }), [sb.id], 10000);
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [failed, setFailed] = useState(null);
  const [made, setMade] = useState(null);
  const [restore, setRestore] = useState(null);
  const [fork, setFork] = useState(null);
  const progress = useProgress(sb.id, busy);

  const take = async (e) => {
    e.preventDefault();
    setBusy(true);
    setFailed(null);
    setMade(null);
    try {
      const s = await post(`/v1/sandboxes/${encodeURIComponent(sb.id)}/snapshots`, name.trim() ? { name: name.trim() } : undefined);
      setMade(s);
      setName("");
      reload();
    } catch (err) {
      setFailed(err);
    } finally {
      setBusy(false);
    }
  };
  const canSnapshot = sb.state !== "archived" && sb.state !== "creating";
  const canRestore = sb.state !== "archived" && sb.state !== "hibernated";
  const list = (data || []).slice().sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  return (
    <section aria-labelledby="snap-title">
      <h2 id="snap-title">Snapshots</h2>
      <form class="inline" onSubmit={take}>
        <label for="snap-name">Name</label>
        <input id="snap-name" value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="optional" data-testid="snapshot-name" />
        <button type="submit" class="primary" disabled={busy || !canSnapshot} data-testid="action-snapshot">
          {busy ? "Taking snapshot…" : "Take snapshot"}
        </button>
        {busy && progress && progress.total ? (
          <progress max={progress.total} value={progress.done} aria-label="Snapshot progress">
            {Math.round((progress.done / progress.total) * 100)}%
          </progress>
        ) : null}
      </form>
      {!canSnapshot ? <p class="hint">A {sb.state} sandbox cannot be snapshotted.</p> : null}
      <ErrorBox error={failed} title="No snapshot taken" />
      {made ? (
        <p class="notice" role="status">
          Snapshot {made.name || made.id} taken: {bytes(made.data_bytes)} of data, {bytes(made.uploaded_bytes)} new in the store
          {made.freeze_us ? `, frozen ${(made.freeze_us / 1000).toFixed(0)} ms` : ""}.
        </p>
      ) : null}
      <ErrorBox error={error} title="Could not list the snapshots" />
      {loading && !data ? <Loading what="snapshots" /> : null}
      {data && list.length === 0 ? <Empty>No snapshot of {sb.name} yet.</Empty> : null}
      {list.length ? (
        <div class="table-wrap">
          <table class="stack" data-testid="snapshots">
            <thead>
              <tr>
                <th scope="col">Snapshot</th>
                <th scope="col">Taken</th>
                <th scope="col">Data</th>
                <th scope="col">Stored</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((s) => (
                <tr data-testid="snapshot-row" data-name={s.name || s.id}>
                  <td>
                    {s.name || <span class="mono">{s.id.slice(0, 16)}</span>}
                    <div class="sub mono">{s.id}</div>
                    {s.memory_bytes ? <div class="sub">with {bytes(s.memory_bytes)} of memory: forks start warm</div> : null}
                  </td>
                  <td data-label="Taken">{new Date(s.created_at).toLocaleString()}</td>
                  <td class="num" data-label="Data">
                    {bytes(s.data_bytes)}
                    <div class="sub">of {bytes(s.volume_size)}</div>
                  </td>
                  <td class="num" data-label="Stored">
                    {bytes(s.stored_bytes)}
                    <div class="sub">{bytes(s.uploaded_bytes)} new</div>
                  </td>
                  <td class="nowrap">
                    <button type="button" onClick={() => setRestore(s)} disabled={!canRestore} data-testid="action-restore">
                      Restore
                    </button>{" "}
                    <button type="button" onClick={() => setFork(s)} data-testid="action-fork">
                      Fork
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {!canRestore ? <p class="hint">A {sb.state} sandbox cannot be restored; {sb.state === "archived" ? "start" : "resume or stop"} it first.</p> : null}
      {restore ? (
        <Confirm
          title={`Restore ${sb.name} to ${restore.name || restore.id.slice(0, 12)}?`}
          confirm="Restore"
          danger
          onConfirm={async () => {
            await post(`/v1/sandboxes/${encodeURIComponent(sb.id)}/restore`, { snapshot: restore.id });
            onChange();
          }}
          onClose={() => setRestore(null)}
        >
          <p>
            <strong>The sandbox's files are replaced by the snapshot's; what was written since is lost</strong> (take a snapshot
            first to keep it).
          </p>
          {sb.state === "running" || sb.state === "paused" ? <p>It is {sb.state}: it is stopped for the restore.</p> : null}
        </Confirm>
      ) : null}
      {fork ? <Fork sb={sb} snap={fork} onClose={() => setFork(null)} /> : null}
    </section>
  );
}

/** Create sandboxes from a snapshot, like the source (image, mode, isolation, resources). */
function Fork({ sb, snap, onClose }) {
  const [name, setName] = useState(`${sb.name}-fork`);
  const [count, setCount] = useState("1");
  const from = snap.id;
  return (
    <Confirm
      title={`Fork ${snap.name || snap.id.slice(0, 12)}`}
      confirm="Create"
      onConfirm={async () => {
        const req = {
          from,
          name: name.trim() || undefined,
          image: sb.image,
          mode: sb.mode,
          runtime: sb.runtime,
          vcpus: sb.spec.vcpus,
          memory: sb.spec.memory_bytes,
          disk: sb.spec.disk_bytes,
          pids: sb.spec.pids,
          network: sb.spec.network,
        };
        const made = await createMany(req, Number(count || 1));
        if (made.length === 1) navigate(`/sandboxes/${encodeURIComponent(made[0].name)}`);
        else navigate("/");
      }}
      onClose={onClose}
    >
      <p>New sandboxes with the snapshot's files, and {sb.name}'s image, mode, isolation, vCPUs, memory, disk, process limit and network.</p>
      <div class="grid">
        <div class="field">
          <label for="fork-name">Name</label>
          <input id="fork-name" value={name} onInput={(e) => setName(e.currentTarget.value)} data-testid="fork-name" />
        </div>
        <div class="field">
          <label for="fork-count">Count</label>
          <input id="fork-count" type="number" min="1" value={count} onInput={(e) => setCount(e.currentTarget.value)} data-testid="fork-count" />
          <span class="hint">More than one: NAME-1 … NAME-N</span>
        </div>
      </div>
      <p>
        <Link href={`/create?from=${encodeURIComponent(from)}&image=${encodeURIComponent(sb.image)}`}>More options in the create form</Link>
      </p>
    </Confirm>
  );
}
