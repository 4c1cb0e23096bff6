// The audit log (`GET /v1/audit`): every request the API took, who made it
// (the API key's id, `local` for the unix socket) and its status; an admin
// sees every tenant's. The API filters by time (`since`) and answers the
// oldest entries first, at most 10,000; the page filters those by sandbox,
// actor and tenant, shows the newest first and pages through them, and moves
// on to the next 10,000 from the last one when there are more.
import { useMemo, useState } from "preact/hooks";
import { actFor, get } from "../api.js";
import { time, usePoll, ErrorBox, Empty, Loading } from "../ui.jsx";

const FETCH = 10000;
const PAGE = 100;

/** A Unix-ms time as the value of an `<input type=datetime-local>`. */
function localInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** The sandbox a request path names (`/v1/sandboxes/web1/exec` -> `web1`). */
function sandboxOf(path) {
  const m = /^\/v1\/sandboxes\/([^/?]+)/.exec(path || "");
  return m ? decodeURIComponent(m[1]) : null;
}

export default function AuditPage({ session }) {
  const [since, setSince] = useState(() => localInput(Date.now() - 24 * 3600 * 1000));
  const [cursor, setCursor] = useState(null); // {at, seq}: continue after this entry
  const [sandbox, setSandbox] = useState("");
  const [actor, setActor] = useState("");
  const [tenant, setTenant] = useState("");
  const [failedOnly, setFailedOnly] = useState(false);
  const [page, setPage] = useState(0);

  // An admin acting for a tenant reads that tenant's log only.
  const allTenants = session.admin && !actFor();
  const sinceMs = since ? new Date(since).getTime() : 0;
  const from = cursor ? cursor.at : sinceMs;
  const { data, error, loading, reload } = usePoll(
    async () => {
      const list = await get("/v1/audit", { since: Number.isFinite(from) ? from : 0, limit: FETCH });
      return cursor ? list.filter((e) => e.at > cursor.at || (e.at === cursor.at && e.seq > cursor.seq)) : list;
    },
    [from, cursor && cursor.seq],
    cursor ? 0 : 30000
  );

  // Requests name a sandbox by id or by name: filter by either.
  const { data: sandboxes } = usePoll(() => get("/v1/sandboxes").catch(() => []), [], 0);
  const names = useMemo(() => new Map((sandboxes || []).map((x) => [x.id, x.name])), [sandboxes]);

  const rows = useMemo(() => {
    const s = sandbox.trim().toLowerCase();
    const a = actor.trim().toLowerCase();
    const out = (data || []).filter((e) => {
      if (s) {
        const sb = sandboxOf(e.path);
        if (!sb) return false;
        const name = names.get(sb) || "";
        if (!sb.toLowerCase().includes(s) && !name.toLowerCase().includes(s)) return false;
      }
      if (a && !e.key_id.toLowerCase().includes(a)) return false;
      if (tenant && e.tenant !== tenant) return false;
      if (failedOnly && e.status < 400) return false;
      return true;
    });
    return out.reverse();
  }, [data, names, sandbox, actor, tenant, failedOnly]);
  const actors = useMemo(() => Array.from(new Set((data || []).map((e) => e.key_id))).sort(), [data]);
  const tenants = useMemo(() => Array.from(new Set((data || []).map((e) => e.tenant))).sort(), [data]);

  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  const at = Math.min(page, pages - 1);
  const shown = rows.slice(at * PAGE, at * PAGE + PAGE);
  const full = data && data.length >= FETCH - (cursor ? 1 : 0);
  const filter = (set) => (e) => {
    set(e.currentTarget.value);
    setPage(0);
  };

  return (
    <section class="audit-page">
      <h1>Audit log</h1>
      <form class="audit-filters" onSubmit={(e) => e.preventDefault()} aria-label="Filters">
        <label>
          Since{" "}
          <input
            type="datetime-local"
            value={since}
            onChange={(e) => {
              setSince(e.currentTarget.value);
              setCursor(null);
              setPage(0);
            }}
            data-testid="audit-since"
          />
        </label>
        <label>
          Sandbox{" "}
          <input value={sandbox} onInput={filter(setSandbox)} placeholder="name or id" data-testid="audit-sandbox" />
        </label>
        <label>
          Actor (key){" "}
          <input value={actor} onInput={filter(setActor)} list="audit-actors" placeholder="key id" data-testid="audit-actor" />
          <datalist id="audit-actors">
            {actors.map((k) => (
              <option value={k} />
            ))}
          </datalist>
        </label>
        {allTenants && tenants.length > 1 ? (
          <label>
            Tenant{" "}
            <select value={tenant} onChange={filter(setTenant)} data-testid="audit-tenant">
              <option value="">All</option>
              {tenants.map((t) => (
                <option value={t}>{t}</option>
              ))}
            </select>
          </label>
        ) : null}
        <label class="check">
          <input
            type="checkbox"
            checked={failedOnly}
            onChange={(e) => {
              setFailedOnly(e.currentTarget.checked);
              setPage(0);
            }}
          />{" "}
          Refused and failed only
        </label>
        <button type="button" onClick={reload} disabled={loading}>
          Refresh
        </button>
      </form>
      <ErrorBox error={error} title="Cannot read the audit log" />
      {cursor ? (
        <p class="hint">
          Entries after {time(cursor.at)}.{" "}
          <button type="button" class="link" onClick={() => (setCursor(null), setPage(0))}>
            Back to {since ? `since ${time(sinceMs)}` : "the start"}
          </button>
        </p>
      ) : null}
      {loading && !data ? (
        <Loading what="the audit log" />
      ) : data && rows.length === 0 ? (
        <Empty>{data.length ? "No entries match these filters." : "No requests recorded in this period."}</Empty>
      ) : data ? (
        <>
          <p class="hint" aria-live="polite">
            {rows.length} of {data.length} entries, newest first.
          </p>
          <div class="table-wrap">
            <table class="audit-table">
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  {allTenants ? <th scope="col">Tenant</th> : null}
                  <th scope="col">Actor</th>
                  <th scope="col">Request</th>
                  <th scope="col" class="num">
                    Status
                  </th>
                </tr>
              </thead>
              <tbody>
                {shown.map((e) => (
                  <tr data-testid="audit-row" key={e.seq}>
                    <td class="nowrap">{time(e.at)}</td>
                    {allTenants ? <td>{e.tenant}</td> : null}
                    <td>
                      <code>{e.key_id}</code>
                    </td>
                    <td class="audit-req">
                      <code>
                        {e.method} {e.path}
                      </code>
                      {names.has(sandboxOf(e.path)) && sandboxOf(e.path) !== names.get(sandboxOf(e.path)) ? (
                        <span class="hint"> ({names.get(sandboxOf(e.path))})</span>
                      ) : null}
                    </td>
                    <td class={`num status-${Math.floor(e.status / 100)}xx`}>{e.status}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <nav class="pager" aria-label="Pages">
            <button type="button" onClick={() => setPage(at - 1)} disabled={at === 0}>
              ← Newer
            </button>
            <span>
              Page {at + 1} of {pages}
            </span>
            <button type="button" onClick={() => setPage(at + 1)} disabled={at >= pages - 1}>
              Older →
            </button>
            {full ? (
              <button
                type="button"
                onClick={() => {
                  const last = data[data.length - 1];
                  setCursor({ at: last.at, seq: last.seq });
                  setPage(0);
                }}
                data-testid="audit-next"
              >
                Load the next {FETCH.toLocaleString()} entries
              </button>
            ) : null}
          </nav>
          {full ? (
            <p class="hint">
              The log holds more entries after these {data.length.toLocaleString()}: load the next ones, or pick a later
              “since”.
            </p>
          ) : null}
        </>
      ) : null}
    </section>
  );
}
