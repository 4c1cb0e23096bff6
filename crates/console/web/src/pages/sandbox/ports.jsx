// The ports of a sandbox exposed through the daemon's port proxy: their
// URLs, a fresh one-time browser link for private ones, expose (private
// unless "public"; the token is shown once) and unexpose.
import { useState } from "preact/hooks";
import { del, get, post } from "../../api.js";
import { Empty, ErrorBox, Loading, time } from "../../ui.jsx";

export default function Ports({ sb, onChange }) {
  const base = `/v1/sandboxes/${encodeURIComponent(sb.id)}/ports`;
  // The sandbox page's own poll of the sandbox carries its ports.
  const data = sb.ports || [];
  const error = null;
  const loading = false;
  const [port, setPort] = useState("");
  const [pub, setPub] = useState(false);
  const [busy, setBusy] = useState(null);
  const [failed, setFailed] = useState(null);
  const [made, setMade] = useState(null);

  const act = async (what, f) => {
    setBusy(what);
    setFailed(null);
    try {
      await f();
      onChange();
    } catch (e) {
      setFailed(e);
    } finally {
      setBusy(null);
    }
  };
  const expose = (e) => {
    e.preventDefault();
    const n = Number(port);
    if (!Number.isInteger(n) || n < 1 || n > 65535) {
      setFailed({ code: "invalid", message: `"${port}" is not a port; give 1-65535` });
      return;
    }
    act("expose", async () => {
      setMade(await post(base, { port: n, public: pub }));
      setPort("");
    });
  };
  const open = (p) => {
    // Opened now, in the click (a window opened after an await is a
    // blocked pop-up), and sent to the fresh one-time link once it is made.
    const w = window.open("about:blank", "_blank");
    act(`open-${p.port}`, async () => {
      try {
        const x = await get(`${base}/${p.port}`);
        const href = x.login_url || x.url;
        if (!href) throw new Error("the daemon runs no port proxy (dwell serve --proxy-listen), so the port has no URL");
        // Only a web address is opened from the console's origin.
        if (!/^https?:\/\//i.test(href)) throw new Error(`the port's URL ${href} is not an http(s) address`);
        if (w) {
          w.opener = null;
          w.location.href = href;
        } else window.open(href, "_blank", "noopener");
      } catch (e) {
        if (w) w.close();
        throw e;
      }
    });
  };
  const declared = sb.image_config && sb.image_config.exposed_ports;
  return (
    <section aria-labelledby="ports-title">
      <h2 id="ports-title">Ports</h2>
      <form class="inline" onSubmit={expose}>
        <label for="port-num">Port</label>
        <input id="port-num" inputMode="numeric" size="6" value={port} onInput={(e) => setPort(e.currentTarget.value)} data-testid="port-number" />
        <label>
          <input type="checkbox" checked={pub} onChange={(e) => setPub(e.currentTarget.checked)} /> public (no token)
        </label>
        <button type="submit" class="primary" disabled={!!busy} data-testid="action-expose">
          {busy === "expose" ? "Exposing…" : "Expose"}
        </button>
      </form>
      {declared && declared.length ? <p class="hint">The image declares {declared.join(", ")}.</p> : null}
      <ErrorBox error={failed} title="Refused" />
      {made ? (
        <div class="notice" role="status">
          Port {made.port} exposed{made.public ? " publicly" : ""}.
          {made.url ? (
            <>
              {" "}
              URL:{" "}
              <a href={made.url} target="_blank" rel="noopener">
                {made.url}
              </a>
            </>
          ) : null}
          {made.token ? (
            <p>
              Its token, shown only now (send it as <code>X-Dwell-Token</code>): <code class="token">{made.token}</code>
            </p>
          ) : null}
          {made.login_url ? (
            <p>
              <a href={made.login_url} target="_blank" rel="noopener">
                Open it in the browser
              </a>{" "}
              (one-time link, valid 15 minutes)
            </p>
          ) : null}
        </div>
      ) : null}
      <ErrorBox error={error} title="Could not list the ports" />
      {loading && !data ? <Loading what="ports" /> : null}
      {data && data.length === 0 ? <Empty>No port of {sb.name} is exposed.</Empty> : null}
      {data && data.length ? (
        <div class="table-wrap">
          <table class="stack" data-testid="ports">
            <thead>
              <tr>
                <th scope="col">Port</th>
                <th scope="col">Access</th>
                <th scope="col">URL</th>
                <th scope="col">Since</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {data.map((p) => (
                <tr data-testid="port-row" data-port={p.port}>
                  <td class="num" data-label="Port">{p.port === 0 ? "all" : p.port}</td>
                  <td data-label="Access">{p.public ? "public" : "private (token)"}</td>
                  <td class="wrap">
                    {p.url ? (
                      <a href={p.url} target="_blank" rel="noopener" class="mono">
                        {p.url}
                      </a>
                    ) : (
                      <span class="sub">no proxy URL</span>
                    )}
                  </td>
                  <td data-label="Since">{time(p.created_at)}</td>
                  <td class="nowrap">
                    {p.url ? (
                      <button type="button" onClick={() => open(p)} disabled={!!busy}>
                        Open
                      </button>
                    ) : null}{" "}
                    <button
                      type="button"
                      class="danger-outline"
                      onClick={() => act(`rm-${p.port}`, () => del(`${base}/${p.port}`))}
                      disabled={!!busy}
                      data-testid="action-unexpose"
                    >
                      Unexpose
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
