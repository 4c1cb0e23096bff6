// The console sessions of this tenant (`GET /v1/console/sessions`): when each
// was made, with which API key, when it was last used and when it expires;
// revoking one (`DELETE /v1/console/sessions/{id}`) ends it at once, and
// revoking this browser's own logs it out.
import { useState } from "preact/hooks";
import { actFor, del, get } from "../api.js";
import { relative, time, usePoll, ErrorBox, Empty, Loading, Confirm } from "../ui.jsx";

/** A user agent string in a few words: `Chrome 131 on Linux`. */
function browser(ua) {
  if (!ua) return "–";
  const known = [
    [/Edg\/(\d+)/, "Edge"],
    [/Firefox\/(\d+)/, "Firefox"],
    [/(?:Chrome|Chromium)\/(\d+)/, "Chrome"],
    [/Version\/(\d+).*Safari/, "Safari"],
  ];
  let name = ua.split(" ")[0];
  for (const [re, label] of known) {
    const m = re.exec(ua);
    if (m) {
      name = `${label} ${m[1]}`;
      break;
    }
  }
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Windows/.test(ua) ? "Windows" : /Mac OS/.test(ua) ? "macOS" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${name} on ${os}` : name;
}

/** How long an idle timeout is: `30m`, `2h`. */
function span(secs) {
  return secs % 3600 === 0 ? `${secs / 3600}h` : secs % 60 === 0 ? `${secs / 60}m` : `${secs}s`;
}

export default function SessionsPage({ session }) {
  const { data, error, loading, reload } = usePoll(() => get("/v1/console/sessions"), [], 15000);
  const [revoking, setRevoking] = useState(null);
  const now = Date.now();
  const list = (data || []).slice().sort((a, b) => (b.current ? 1 : 0) - (a.current ? 1 : 0) || b.created_at - a.created_at);

  return (
    <section class="sessions-page">
      <h1>Console sessions</h1>
      <p class="hint">
        Browsers logged in to this console as tenant <strong>{actFor() || session.tenant}</strong>. A session ends when it expires,
        when it is revoked here, or on log out.
      </p>
      <ErrorBox error={error} title="Cannot list the sessions" />
      {loading && !data ? (
        <Loading what="sessions" />
      ) : data && list.length === 0 ? (
        <Empty>No console sessions.</Empty>
      ) : data ? (
        <div class="table-wrap">
          <table class="sessions-table">
            <thead>
              <tr>
                <th scope="col">Session</th>
                <th scope="col">API key</th>
                <th scope="col">Browser</th>
                <th scope="col">Created</th>
                <th scope="col">Last seen</th>
                <th scope="col">Expires</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((s) => (
                <tr data-testid="session-row" data-id={s.id} data-current={s.current ? "true" : "false"} key={s.id}>
                  <th scope="row">
                    <code>{s.id}</code>
                    {s.current ? <span class="note-tag"> this browser</span> : null}
                  </th>
                  <td>
                    <code>{s.key_id}</code>
                  </td>
                  <td title={s.user_agent}>{browser(s.user_agent)}</td>
                  <td title={time(s.created_at)}>{relative(s.created_at, now)}</td>
                  <td title={time(s.last_seen_at)}>{s.last_seen_at ? relative(s.last_seen_at, now) : "–"}</td>
                  <td title={time(s.expires_at)}>
                    {relative(s.expires_at, now)}
                    {s.idle_timeout_secs ? <div class="hint">or after {span(s.idle_timeout_secs)} idle</div> : null}
                  </td>
                  <td class="row-actions">
                    <button type="button" class={s.current ? "" : "danger"} onClick={() => setRevoking(s)} data-testid="session-revoke">
                      {s.current ? "Revoke (log out)" : "Revoke"}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {revoking ? (
        <Confirm
          title={revoking.current ? "Revoke this browser's session?" : `Revoke session ${revoking.id}?`}
          confirm={revoking.current ? "Revoke and log out" : "Revoke"}
          danger
          onClose={() => setRevoking(null)}
          onConfirm={async () => {
            await del(`/v1/console/sessions/${encodeURIComponent(revoking.id)}`);
            if (revoking.current) {
              // This browser's session is gone: back to the login page.
              sessionStorage.removeItem("dwell-act-for");
              location.assign("/ui/login");
              return;
            }
            reload();
          }}
        >
          {revoking.current ? (
            <p>This is the session of this browser: revoking it logs you out here.</p>
          ) : (
            <p>
              The browser using it (made with key <code>{revoking.key_id}</code>) is logged out on its next request.
            </p>
          )}
        </Confirm>
      ) : null}
    </section>
  );
}
