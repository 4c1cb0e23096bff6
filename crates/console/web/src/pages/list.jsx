// The sandbox list: every sandbox of the tenant with its state, mode,
// isolation, image, resources, next policy deadline, live CPU and memory,
// disk use and node; filtered by state and searched by name, id or image.
// Polled every 3 s without reloading. Filter and search run over every
// sandbox; PAGE rows are drawn at a time ("Show more"): a table of a
// thousand rows took a browser up to 1.8 s to lay out (BENCHMARKS.md,
// "A web console"), 200 of them a fifth of that.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { get } from "../api.js";
import { Link } from "../router.jsx";
import { bytes, cpuPercent, Empty, ErrorBox, Loading, nextDeadline, StateBadge, usePoll } from "../ui.jsx";

const STATES = ["creating", "running", "paused", "hibernated", "stopped", "archived", "error"];
const PAGE = 200;

/** The list and when it was read (for CPU % between two polls). */
async function load() {
  const list = await get("/v1/sandboxes", { stats: "true" });
  return { list: list || [], at: Date.now() };
}

export default function SandboxList() {
  const { data, error, loading } = usePoll(load, [], 3000);
  const [state, setState] = useState("");
  const [search, setSearch] = useState("");
  const [shown, setShown] = useState(PAGE);
  const searchRef = useRef(null);
  const cpu = useRef(new Map());

  // "/" jumps to the search box, as in many consoles.
  useEffect(() => {
    const onKey = (e) => {
      const t = e.target;
      const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
      if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        searchRef.current && searchRef.current.focus();
      }
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);
  useEffect(() => setShown(PAGE), [state, search]);

  const all = data ? data.list : [];
  // CPU % of every running sandbox, from this poll's counter and the last.
  const usage = useMemo(() => {
    const m = new Map();
    if (!data) return m;
    for (const sb of data.list) m.set(sb.id, cpuPercent(cpu.current, sb.id, sb.stats ? sb.stats.cpu_usage_ns : null, data.at));
    return m;
  }, [data]);
  const counts = useMemo(() => {
    const c = {};
    for (const sb of all) c[sb.state] = (c[sb.state] || 0) + 1;
    return c;
  }, [all]);
  const rows = useMemo(() => {
    const q = search.trim().toLowerCase();
    return all.filter(
      (sb) =>
        (!state || sb.state === state) &&
        (!q || sb.name.toLowerCase().includes(q) || sb.id.toLowerCase().includes(q) || sb.image.toLowerCase().includes(q))
    );
  }, [all, state, search]);
  const clustered = useMemo(() => all.some((sb) => sb.node), [all]);

  if (loading && !data) return <Loading what="sandboxes" />;
  if (!data) return <ErrorBox error={error} title="Could not list the sandboxes" />;
  const now = data ? data.at : Date.now();
  return (
    <section class="sb-list" aria-labelledby="list-title">
      <div class="page-head">
        <h1 id="list-title">Sandboxes</h1>
        <Link href="/create" class="button primary">
          Create sandbox
        </Link>
      </div>
      <ErrorBox error={error} title="Could not list the sandboxes" />
      {data && all.length === 0 ? (
        <Empty>
          No sandboxes yet — <Link href="/create">create one</Link>.
        </Empty>
      ) : (
        <>
          <div class="filters" role="search">
            <label>
              State{" "}
              <select value={state} onChange={(e) => setState(e.currentTarget.value)} data-testid="state-filter">
                <option value="">all ({all.length})</option>
                {STATES.map((s) => (
                  <option value={s}>
                    {s} ({counts[s] || 0})
                  </option>
                ))}
              </select>
            </label>
            <label>
              Search{" "}
              <input
                ref={searchRef}
                type="search"
                placeholder="name, id or image  ( / )"
                value={search}
                onInput={(e) => setSearch(e.currentTarget.value)}
                data-testid="search"
                aria-keyshortcuts="/"
              />
            </label>
            <span class="hint" aria-live="polite">
              {rows.length === all.length ? `${all.length} sandboxes` : `${rows.length} of ${all.length} sandboxes`}
            </span>
          </div>
          {rows.length === 0 ? (
            <Empty>No sandbox matches these filters.</Empty>
          ) : (
            <div class="table-wrap">
              <table class="sandboxes">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">State</th>
                    <th scope="col">Mode</th>
                    <th scope="col">Isolation</th>
                    <th scope="col">Image</th>
                    <th scope="col">Resources</th>
                    <th scope="col">Next policy</th>
                    <th scope="col" title="percent of one core since the last refresh">
                      CPU
                    </th>
                    <th scope="col">Memory</th>
                    <th scope="col">Disk</th>
                    {clustered ? <th scope="col">Node</th> : null}
                  </tr>
                </thead>
                <tbody>
                  {rows.slice(0, shown).map((sb) => (
                    <Row sb={sb} cpu={usage.get(sb.id)} now={now} clustered={clustered} key={sb.id} />
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {rows.length > shown ? (
            <button class="more" onClick={() => setShown(shown + PAGE)} data-testid="show-more">
              Show more ({rows.length - shown} more)
            </button>
          ) : null}
        </>
      )}
    </section>
  );
}

/** One sandbox's row; the name links to its page. */
function Row({ sb, cpu, now, clustered }) {
  const s = sb.stats;
  const next = nextDeadline(sb.schedule, now);
  const vol = sb.volume;
  return (
    <tr data-testid="sandbox-row" data-name={sb.name}>
      <th scope="row">
        <Link href={`/sandboxes/${encodeURIComponent(sb.name)}`}>{sb.name}</Link>
        <div class="sub mono">{sb.id}</div>
      </th>
      {/* Only the state in this cell (tests read it); where it is going and why in its title. */}
      <td
        data-testid="state"
        title={[sb.desired_state !== sb.state ? `asked to be ${sb.desired_state}` : "", sb.reason].filter(Boolean).join(": ") || undefined}
      >
        <StateBadge state={sb.state} />
      </td>
      <td>{sb.mode}</td>
      <td>{sb.runtime}</td>
      <td class="mono wrap">{sb.image}</td>
      <td class="nowrap">
        {sb.spec.vcpus} vCPU
        <div class="sub">
          {bytes(sb.spec.memory_bytes)} · {bytes(sb.spec.disk_bytes)} disk
        </div>
      </td>
      <td title={sb.schedule && sb.schedule[0] ? `${sb.schedule[0].policy}: ${new Date(sb.schedule[0].at).toLocaleString()}` : undefined}>
        {next || <span class="sub">none</span>}
        {sb.schedule && sb.schedule[0] ? <div class="sub">{sb.schedule[0].policy}</div> : null}
      </td>
      <td class="num">{cpu === null || cpu === undefined ? "–" : `${cpu.toFixed(cpu < 10 ? 1 : 0)}%`}</td>
      <td class="num nowrap">
        {s ? (
          <>
            {bytes(s.memory_bytes)}
            <div class="sub">of {bytes(s.memory_limit_bytes || sb.spec.memory_bytes)}</div>
          </>
        ) : (
          "–"
        )}
      </td>
      <td class="num nowrap">
        {vol ? (
          <>
            {bytes(vol.used_bytes)}
            <div class="sub">of {bytes(vol.size_bytes)}</div>
          </>
        ) : (
          "–"
        )}
      </td>
      {clustered ? <td>{sb.node || "–"}</td> : null}
    </tr>
  );
}
