// The processes started in a sandbox through the API (execs, shells,
// the terminal's), running or finished, polled every 2 s, with buttons to
// send TERM or KILL to a running one.
import { useState } from "preact/hooks";
import { get, post } from "../../api.js";
import { Empty, ErrorBox, Loading, relative, time, usePoll } from "../../ui.jsx";
import { exitText } from "./overview.jsx";

export default function Processes({ sb }) {
  const running = sb.state === "running";
  const { data, error, loading, reload } = usePoll(
    () => (running ? get(`/v1/sandboxes/${encodeURIComponent(sb.id)}/processes`) : Promise.resolve(null)),
    [sb.id, running],
    2000
  );
  const [busy, setBusy] = useState(null);
  const [failed, setFailed] = useState(null);
  const signal = async (pid, sig) => {
    setBusy(`${pid}-${sig}`);
    setFailed(null);
    try {
      await post(`/v1/sandboxes/${encodeURIComponent(sb.id)}/processes/${pid}/signal`, { signal: sig });
      reload();
    } catch (e) {
      setFailed(e);
    } finally {
      setBusy(null);
    }
  };
  if (!running) return <Empty>Processes exist only while the sandbox runs; it is {sb.state}.</Empty>;
  if (loading && !data) return <Loading what="processes" />;
  const list = (data || []).slice().sort((a, b) => Number(b.running) - Number(a.running) || b.started_at_ms - a.started_at_ms);
  return (
    <section aria-labelledby="ps-title">
      <h2 id="ps-title">Processes</h2>
      <ErrorBox error={error} title="Could not list the processes" />
      <ErrorBox error={failed} title="Signal refused" />
      {list.length === 0 ? (
        <Empty>No process was started through the API yet.</Empty>
      ) : (
        <div class="table-wrap">
          <table class="stack" data-testid="processes">
            <thead>
              <tr>
                <th scope="col">PID</th>
                <th scope="col">Command</th>
                <th scope="col">Tag</th>
                <th scope="col">Started</th>
                <th scope="col">Status</th>
                <th scope="col">
                  <span class="visually-hidden">Signals</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((p) => (
                <tr data-testid="process-row" data-pid={p.pid}>
                  <td class="num" data-label="PID">{p.pid}</td>
                  <td class="mono wrap">{p.argv.join(" ")}</td>
                  <td>
                    {p.tag || ""}
                    {p.tty ? <span class="sub"> tty</span> : null}
                    {p.background ? <span class="sub"> bg</span> : null}
                  </td>
                  <td title={time(p.started_at_ms)} data-label="Started">
                    {relative(p.started_at_ms)}
                  </td>
                  <td data-label="Status">{p.running ? "running" : exitText(p.exit) || "ended"}</td>
                  <td class="nowrap">
                    {p.running ? (
                      <>
                        <button type="button" onClick={() => signal(p.pid, 15)} disabled={!!busy} aria-label={`Terminate process ${p.pid} (TERM)`}>
                          TERM
                        </button>{" "}
                        <button
                          type="button"
                          class="danger-outline"
                          onClick={() => signal(p.pid, 9)}
                          disabled={!!busy}
                          aria-label={`Kill process ${p.pid} (KILL)`}
                        >
                          KILL
                        </button>
                      </>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
