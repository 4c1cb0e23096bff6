// The nodes of a cluster (`GET /v1/nodes`, admin): state, address, what each
// offers and what its sandboxes hold, how many sandboxes it owns, its last
// heartbeat and labels; drain (new sandboxes go elsewhere, its sandboxes move
// off) and undrain, each after a confirmation. A single daemon has no nodes.
import { useState } from "preact/hooks";
import { actFor, get, post } from "../api.js";
import { bytes, relative, time, usePoll, ErrorBox, Empty, Loading, Confirm } from "../ui.jsx";

function num(v) {
  return Number.isInteger(v) ? String(v) : Number(v).toFixed(1);
}

/** `held of offered` with a small bar. */
function Capacity({ label, held, offered, show }) {
  const pct = offered > 0 ? Math.min(100, (held / offered) * 100) : 0;
  const text = `${show(held)} of ${show(offered)}`;
  return (
    <div class="node-cap">
      <span class="node-cap-label">{label}</span>
      <span class="node-cap-bar" role="meter" aria-label={`${label} held`} aria-valuemin={0} aria-valuemax={offered} aria-valuenow={held} aria-valuetext={text}>
        <span style={{ width: `${pct}%` }} class={pct >= 90 ? "high" : pct >= 70 ? "mid" : "low"} />
      </span>
      <span class="node-cap-text">{text}</span>
    </div>
  );
}

export default function NodesPage({ session }) {
  const allowed = session.admin && !actFor();
  const { data, error, loading, reload } = usePoll(() => (allowed ? get("/v1/nodes") : Promise.resolve(null)), [allowed], 5000);
  const [acting, setActing] = useState(null); // {node, verb}

  if (!allowed)
    return (
      <section>
        <h1>Nodes</h1>
        <Empty>
          {session.admin
            ? "The nodes are shown to the admin acting for itself: pick your own tenant in the tenant picker."
            : "The nodes of a cluster are shown to admin keys only."}
        </Empty>
      </section>
    );

  const now = Date.now();
  return (
    <section class="nodes-page">
      <h1>Nodes</h1>
      <ErrorBox error={error} title="Cannot list the nodes" />
      {loading && !data ? (
        <Loading what="nodes" />
      ) : data && data.length === 0 ? (
        <Empty>
          <p data-testid="not-clustered">
            This daemon is not part of a cluster: it runs every sandbox itself, so there are no nodes to list or drain.
          </p>
          <p class="hint">
            Nodes appear when daemons share a cluster store (<code>dwell serve --cluster …</code>).
          </p>
        </Empty>
      ) : data ? (
        <div class="table-wrap">
          <table class="nodes-table">
            <thead>
              <tr>
                <th scope="col">Node</th>
                <th scope="col">State</th>
                <th scope="col">Address</th>
                <th scope="col">Capacity (held of offered)</th>
                <th scope="col" class="num">
                  Owns
                </th>
                <th scope="col">Heartbeat</th>
                <th scope="col">Labels</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {data.map((n) => (
                <tr data-testid="node-row" data-name={n.name} key={n.name}>
                  <th scope="row">
                    {n.name}
                    {n.this_node ? <span class="note-tag"> this node</span> : null}
                    <div class="hint">v{n.version}</div>
                  </th>
                  <td>
                    <span class={`node-state node-${n.state}`} data-testid="node-state">
                      {n.state}
                    </span>
                  </td>
                  <td>
                    <code>{n.advertise}</code>
                  </td>
                  <td class="node-caps">
                    <Capacity label="vCPUs" held={n.allocated_vcpus} offered={n.vcpus} show={num} />
                    <Capacity label="Memory" held={n.allocated_memory_bytes} offered={n.memory_bytes} show={bytes} />
                    <Capacity label="Disk" held={n.allocated_disk_bytes} offered={n.disk_bytes} show={bytes} />
                  </td>
                  <td class="num" title={`${n.sandboxes} hold compute`}>
                    {n.owned}
                    {n.state === "draining" ? <div class="hint">{n.owned ? "moving off" : "drained"}</div> : null}
                  </td>
                  <td title={time(n.heartbeat_at)}>
                    {relative(n.heartbeat_at, now)}
                    <div class="hint">lease {relative(n.lease_until, now)}</div>
                  </td>
                  <td>
                    {Object.entries(n.labels || {}).map(([k, v]) => (
                      <code class="label">
                        {k}={v}
                      </code>
                    ))}
                  </td>
                  <td class="row-actions">
                    {n.state === "draining" ? (
                      <button type="button" onClick={() => setActing({ node: n, verb: "undrain" })} data-testid="action-undrain">
                        Undrain
                      </button>
                    ) : (
                      <button
                        type="button"
                        onClick={() => setActing({ node: n, verb: "drain" })}
                        disabled={n.state === "lost"}
                        title={n.state === "lost" ? "Its lease ran out; it takes nothing new" : undefined}
                        data-testid="action-drain"
                      >
                        Drain
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {acting ? (
        <Confirm
          title={acting.verb === "drain" ? `Drain ${acting.node.name}?` : `Undrain ${acting.node.name}?`}
          confirm={acting.verb === "drain" ? "Drain" : "Undrain"}
          danger={acting.verb === "drain"}
          onClose={() => setActing(null)}
          onConfirm={async () => {
            await post(`/v1/nodes/${encodeURIComponent(acting.node.name)}/${acting.verb}`);
            reload();
          }}
        >
          {acting.verb === "drain" ? (
            <p>
              New sandboxes will be placed on other nodes, and the {acting.node.owned} sandbox
              {acting.node.owned === 1 ? "" : "es"} it owns move to other nodes one at a time (cold, unless hibernated).
              One that cannot move says why in its events.
            </p>
          ) : (
            <p>{acting.node.name} takes new sandboxes again. Sandboxes that already moved off stay where they are.</p>
          )}
        </Confirm>
      ) : null}
    </section>
  );
}
