// A sandbox's overview: its spec and resources, live stats, volume,
// policies with when each fires next (editable: PATCH /v1/sandboxes/{id}),
// network and egress rules (editable for NAT sandboxes), private networks,
// node, service, image config and archive.
import { useState } from "preact/hooks";
import { patch } from "../../api.js";
import { bytes, duration, ErrorBox, relative, splitList, time } from "../../ui.jsx";

/** A definition list of [label, value] pairs, skipping empty values. */
function Facts({ rows }) {
  return (
    <dl class="facts">
      {rows
        .filter(([, v]) => v !== null && v !== undefined && v !== "" && v !== false)
        .map(([k, v]) => (
          <>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </>
        ))}
    </dl>
  );
}

const when = (ms) => (ms ? `${time(ms)} (${relative(ms)})` : null);
const words = (argv) => (argv && argv.length ? <code>{argv.join(" ")}</code> : null);

/** Environment-like maps as `KEY=VALUE` lines. */
function Pairs({ map }) {
  const keys = Object.keys(map || {});
  if (!keys.length) return null;
  return (
    <ul class="pairs mono">
      {keys.map((k) => (
        <li>
          {k}={map[k]}
        </li>
      ))}
    </ul>
  );
}

export default function Overview({ sb, cpu, onChange }) {
  const sp = sb.spec;
  const st = sb.stats;
  const vol = sb.volume;
  const svc = sb.service;
  const ic = sb.image_config;
  return (
    <div class="cards">
      <section class="card" aria-labelledby="ov-live">
        <h2 id="ov-live">Resources and live use</h2>
        <Facts
          rows={[
            ["vCPUs", sp.vcpus],
            ["CPU", cpu === null || cpu === undefined ? (st ? "measuring…" : null) : `${cpu.toFixed(1)}% of one core`],
            ["Memory", st ? `${bytes(st.memory_bytes)} of ${bytes(st.memory_limit_bytes || sp.memory_bytes)}` : bytes(sp.memory_bytes)],
            ["Processes", st ? `${st.pids} of ${sp.pids}` : `at most ${sp.pids}`],
            ["OOM kills", st && st.oom_kills ? String(st.oom_kills) : null],
            ["Disk", vol ? `${bytes(vol.used_bytes)} used of ${bytes(vol.size_bytes)}` : bytes(sp.disk_bytes)],
            ["Volume", vol ? `${vol.kind}, ${vol.mounted ? "mounted" : "not mounted"}, ${vol.limit_enforced ? "size enforced" : "size NOT enforced (usage accounting only)"}` : null],
            ["Saved state", sb.saved_state_bytes ? bytes(sb.saved_state_bytes) : null],
          ]}
        />
        {!st && sb.state !== "running" ? <p class="hint">Live use is shown while it runs.</p> : null}
      </section>

      <section class="card" aria-labelledby="ov-sb">
        <h2 id="ov-sb">Sandbox</h2>
        <Facts
          rows={[
            ["Id", <span class="mono">{sb.id}</span>],
            ["Tenant", sb.tenant],
            ["Image", <span class="mono">{sb.image}</span>],
            ["Mode", sb.mode],
            ["Isolation", sb.runtime],
            ["State", `${sb.state}${sb.desired_state !== sb.state ? ` (asked: ${sb.desired_state})` : ""}`],
            ["Why", sb.reason],
            ["Node", sb.node],
            ["Created", when(sb.created_at)],
            ["Started", when(sb.started_at)],
            ["Stopped", sb.stopped_at && !(sb.started_at > sb.stopped_at) ? when(sb.stopped_at) : null],
            ["State since", when(sb.state_changed_at)],
            ["Last activity", when(sb.last_activity_at)],
            ["Held until", sb.hold_until && sb.hold_until > Date.now() ? when(sb.hold_until) : null],
            ["Wakes on use", sb.wakes_on_use === undefined || sb.wakes_on_use === null ? null : sb.wakes_on_use ? "yes" : "no"],
            ["Backups", sp.backup_every_ms ? `every ${duration(sp.backup_every_ms)}` : null],
            ["Last backup", when(sb.last_backup_at)],
            ["Raw sockets", sp.allow_raw_sockets ? "allowed" : null],
            ["Core dumps", sp.allow_core_dumps ? "allowed" : null],
          ]}
        />
      </section>

      <Policies sb={sb} onChange={onChange} />
      <Network sb={sb} onChange={onChange} />

      <section class="card" aria-labelledby="ov-env">
        <h2 id="ov-env">Environment, labels, volumes</h2>
        {Object.keys(sp.env || {}).length ? (
          <>
            <h3>Variables</h3>
            <Pairs map={sp.env} />
          </>
        ) : null}
        {sp.secret_env_names && sp.secret_env_names.length ? (
          <>
            <h3>Secret variables</h3>
            <p class="mono">{sp.secret_env_names.join(", ")} (values sealed)</p>
          </>
        ) : null}
        {Object.keys(sp.labels || {}).length ? (
          <>
            <h3>Labels</h3>
            <Pairs map={sp.labels} />
          </>
        ) : null}
        {Object.keys(sp.node_selector || {}).length ? (
          <>
            <h3>Node selector</h3>
            <Pairs map={sp.node_selector} />
          </>
        ) : null}
        {sp.volumes && sp.volumes.length ? (
          <>
            <h3>Named volumes</h3>
            <ul class="mono">
              {sp.volumes.map((v) => (
                <li>
                  {v.name} → {v.path}
                  {v.read_only ? " (read-only)" : ""}
                </li>
              ))}
            </ul>
          </>
        ) : null}
        {!Object.keys(sp.env || {}).length && !(sp.secret_env_names || []).length && !Object.keys(sp.labels || {}).length && !(sp.volumes || []).length ? (
          <p class="hint">No variables, labels or named volumes.</p>
        ) : null}
      </section>

      {sp.service || svc || ic ? (
        <section class="card" aria-labelledby="ov-svc">
          <h2 id="ov-svc">Service and image config</h2>
          {sp.service ? (
            <Facts
              rows={[
                ["Command", words(sp.service.command)],
                ["Workdir", sp.service.workdir],
                ["User", sp.service.user],
                ["Restart", sp.service.restart + (sp.service.max_retries ? ` (at most ${sp.service.max_retries})` : "")],
                ["Health check", sp.service.healthcheck ? words(sp.service.healthcheck.test) : null],
              ]}
            />
          ) : null}
          {svc ? (
            <Facts
              rows={[
                ["Service", `${svc.state}${svc.pid ? ` (pid ${svc.pid})` : ""}`],
                ["Health", svc.health ? `${svc.health}${svc.health_failures ? `, ${svc.health_failures} failures` : ""}` : null],
                ["Restarts", svc.restarts ? String(svc.restarts) : null],
                ["Last exit", svc.last_exit ? exitText(svc.last_exit) : null],
                ["Error", svc.error],
              ]}
            />
          ) : null}
          {ic ? (
            <>
              <h3>Image config</h3>
              <Facts
                rows={[
                  ["Entrypoint", words(ic.entrypoint)],
                  ["Cmd", words(ic.cmd)],
                  ["Workdir", ic.workdir],
                  ["User", ic.user],
                  ["Exposed ports", ic.exposed_ports && ic.exposed_ports.length ? ic.exposed_ports.join(", ") : null],
                ]}
              />
              <Pairs map={ic.labels} />
            </>
          ) : null}
        </section>
      ) : null}

      {sb.archive ? (
        <section class="card" aria-labelledby="ov-arch">
          <h2 id="ov-arch">Archive</h2>
          <Facts
            rows={[
              ["Snapshot", <span class="mono">{sb.archive.snapshot}</span>],
              ["Archived", sb.archive.archived_at],
              ["Volume", bytes(sb.archive.volume_size)],
              ["Data", bytes(sb.archive.data_bytes)],
              ["Stored", bytes(sb.archive.stored_bytes)],
              ["Memory", sb.archive.hibernated ? "archived too (resumes warm)" : null],
            ]}
          />
        </section>
      ) : null}
    </div>
  );
}

/** How a process ended. */
export function exitText(x) {
  if (!x) return "";
  if (x.timed_out) return "timed out";
  if (x.signal) return `killed by signal ${x.signal}`;
  return `exit ${x.code ?? "?"}`;
}

const POLICY_FIELDS = [
  ["idle_timeout", "Idle timeout"],
  ["ttl", "TTL"],
  ["pause_after", "Stop after paused"],
  ["archive_after", "Archive after stopped"],
  ["delete_after", "Delete after stopped"],
  ["max_lifetime", "Max lifetime"],
];

/** The policies, when each fires next, and their editor. */
function Policies({ sb, onChange }) {
  const p = sb.spec.policies || {};
  const [edit, setEdit] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const open = () => {
    const v = {};
    for (const [k] of POLICY_FIELDS) v[k] = duration(p[`${k}_ms`]);
    v.ttl_action = p.ttl_action || "";
    v.auto_resume = p.auto_resume === undefined || p.auto_resume === null ? "" : p.auto_resume ? "on" : "off";
    setError(null);
    setEdit(v);
  };
  const save = async (e) => {
    e.preventDefault();
    // Only what changed; a cleared field is sent as `off`.
    const body = {};
    for (const [k] of POLICY_FIELDS) {
      const was = duration(p[`${k}_ms`]);
      const now = edit[k].trim();
      if (now === was) continue;
      body[k] = now === "" ? "off" : now;
    }
    if (edit.ttl_action && edit.ttl_action !== (p.ttl_action || "")) body.ttl_action = edit.ttl_action;
    const ar = p.auto_resume === undefined || p.auto_resume === null ? "" : p.auto_resume ? "on" : "off";
    if (edit.auto_resume && edit.auto_resume !== ar) body.auto_resume = edit.auto_resume === "on";
    if (!Object.keys(body).length) {
      setEdit(null);
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await patch(`/v1/sandboxes/${encodeURIComponent(sb.id)}`, { policies: body });
      setEdit(null);
      onChange();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const set = (k) => (e) => {
    const v = e.currentTarget.value;
    setEdit((old) => ({ ...old, [k]: v }));
  };
  return (
    <section class="card" aria-labelledby="ov-pol">
      <h2 id="ov-pol">Policies</h2>
      {sb.schedule && sb.schedule.length ? (
        <table class="compact" data-testid="schedule">
          <thead>
            <tr>
              <th scope="col">Policy</th>
              <th scope="col">Does</th>
              <th scope="col">Next</th>
            </tr>
          </thead>
          <tbody>
            {sb.schedule.map((s) => (
              <tr>
                <td>{s.policy}</td>
                <td>{s.action}</td>
                <td title={time(s.at)}>{relative(s.at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <p class="hint">Nothing scheduled in this state.</p>
      )}
      {!edit ? (
        <>
          <Facts
            rows={[
              ...POLICY_FIELDS.map(([k, label]) => [label, duration(p[`${k}_ms`])]),
              ["TTL does", p.ttl_action],
              ["Wake on use", p.auto_resume === undefined || p.auto_resume === null ? null : p.auto_resume ? "on" : "off"],
            ]}
          />
          <button type="button" onClick={open} data-testid="edit-policies">
            Edit policies
          </button>
        </>
      ) : (
        <form class="policies" onSubmit={save} data-testid="policies-form">
          <p class="hint">Durations like 30s, 10m, 1h30m, 7d; empty turns a policy off.</p>
          <div class="grid">
            {POLICY_FIELDS.map(([k, label]) => (
              <div class="field">
                <label for={`p-${k}`}>{label}</label>
                <input id={`p-${k}`} value={edit[k]} onInput={set(k)} placeholder="off" />
              </div>
            ))}
            <div class="field">
              <label for="p-ttl_action">TTL does</label>
              <select id="p-ttl_action" value={edit.ttl_action} onChange={set("ttl_action")}>
                {/* Once set it can be changed, not unset (the API takes values only). */}
                {p.ttl_action ? null : <option value="">default</option>}
                <option value="pause">pause</option>
                <option value="stop">stop</option>
                <option value="archive">archive</option>
                <option value="delete">delete</option>
              </select>
            </div>
            <div class="field">
              <label for="p-auto_resume">Wake on use</label>
              <select id="p-auto_resume" value={edit.auto_resume} onChange={set("auto_resume")}>
                {p.auto_resume === undefined || p.auto_resume === null ? <option value="">default</option> : null}
                <option value="on">on</option>
                <option value="off">off</option>
              </select>
            </div>
          </div>
          <ErrorBox error={error} title="Not changed" />
          <div class="buttons">
            <button type="button" onClick={() => setEdit(null)} disabled={busy}>
              Cancel
            </button>
            <button type="submit" class="primary" disabled={busy} data-testid="save-policies">
              {busy ? "Saving…" : "Save policies"}
            </button>
          </div>
        </form>
      )}
    </section>
  );
}

/** Network mode, egress rules (editable for NAT) and private networks. */
function Network({ sb, onChange }) {
  const sp = sb.spec;
  const eg = sp.egress;
  const [edit, setEdit] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await patch(`/v1/sandboxes/${encodeURIComponent(sb.id)}`, {
        allow_out: splitList(edit.allow),
        deny_out: splitList(edit.deny),
      });
      setEdit(null);
      onChange();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="card" aria-labelledby="ov-net">
      <h2 id="ov-net">Network</h2>
      <Facts
        rows={[
          ["Mode", sp.network === "nat" ? "NAT (outbound access)" : "none (loopback only)"],
          ["Allowed out", eg && eg.allow.length ? eg.allow.join(", ") : sp.network === "nat" ? "anywhere but the host and blocked networks" : null],
          ["Denied out", eg && eg.deny.length ? eg.deny.join(", ") : null],
          ["Precedence", eg && eg.precedence !== "deny_wins" ? eg.precedence : null],
          ["Exposed ports", sb.ports && sb.ports.length ? sb.ports.map((p) => p.port).join(", ") : null],
        ]}
      />
      {sb.networks && sb.networks.length ? (
        <div class="table-wrap">
          <table class="compact">
            <thead>
              <tr>
                <th scope="col">Private network</th>
                <th scope="col">Address</th>
                <th scope="col">Subnet</th>
                <th scope="col">Interface</th>
              </tr>
            </thead>
            <tbody>
              {sb.networks.map((n) => (
                <tr>
                  <td>{n.network}</td>
                  <td class="mono">{n.address}</td>
                  <td class="mono">{n.subnet}</td>
                  <td class="mono">{n.interface}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {sp.network === "nat" ? (
        edit ? (
          <form onSubmit={save} data-testid="egress-form">
            <div class="grid">
              <div class="field">
                <label for="e-allow">Allow out</label>
                <textarea id="e-allow" rows="2" value={edit.allow} onInput={(e) => setEdit({ ...edit, allow: e.currentTarget.value })} />
              </div>
              <div class="field">
                <label for="e-deny">Deny out</label>
                <textarea id="e-deny" rows="2" value={edit.deny} onInput={(e) => setEdit({ ...edit, deny: e.currentTarget.value })} />
              </div>
            </div>
            <p class="hint">CIDR blocks and domain names, comma-separated; applied at once, without a restart.</p>
            <ErrorBox error={error} title="Not changed" />
            <div class="buttons">
              <button type="button" onClick={() => setEdit(null)} disabled={busy}>
                Cancel
              </button>
              <button type="submit" class="primary" disabled={busy}>
                {busy ? "Saving…" : "Save egress rules"}
              </button>
            </div>
          </form>
        ) : (
          <button type="button" onClick={() => setEdit({ allow: eg ? eg.allow.join(", ") : "", deny: eg ? eg.deny.join(", ") : "" })}>
            Edit egress rules
          </button>
        )
      ) : null}
    </section>
  );
}
