// The lifecycle actions of one sandbox (pause, resume, hibernate, stop,
// start, archive, delete), each offered only in the states where it makes
// sense, and a keepalive. Stop, archive and delete ask first (as the
// CLI's confirmations do); deleting a running sandbox sends force=true and
// says so. The API's refusal is shown next to the buttons.
import { useState } from "preact/hooks";
import { del, post } from "../../api.js";
import { navigate } from "../../router.jsx";
import { Confirm, ErrorBox, relative } from "../../ui.jsx";

/** Whether a sandbox in `sb.state` can be asked to `verb`. */
export function offered(verb, sb) {
  const s = sb.state;
  switch (verb) {
    case "pause":
      return s === "running";
    case "resume":
      return s === "paused" || s === "hibernated" || (s === "archived" && !!(sb.archive && sb.archive.hibernated));
    case "hibernate":
      return (s === "running" || s === "paused") && sb.runtime === "gvisor";
    case "stop":
      return s === "running" || s === "paused" || s === "hibernated" || s === "creating" || s === "error";
    case "start":
      return s === "stopped" || s === "archived" || s === "error";
    case "archive":
      // An ephemeral sandbox has nothing to keep (the API refuses).
      return sb.mode !== "ephemeral" && (s === "stopped" || s === "hibernated" || s === "error");
    case "delete":
      return s !== "deleted";
    default:
      return false;
  }
}

/** Whether deleting it needs force (its processes exist or it is starting). */
export const needsForce = (sb) => sb.state === "running" || sb.state === "paused" || sb.state === "creating";

const VERBS = [
  ["pause", "Pause"],
  ["resume", "Resume"],
  ["hibernate", "Hibernate"],
  ["stop", "Stop"],
  ["start", "Start"],
  ["archive", "Archive"],
  ["delete", "Delete"],
];

export default function Actions({ sb, onChange }) {
  const [busy, setBusy] = useState(null);
  const [error, setError] = useState(null);
  const [ask, setAsk] = useState(null);
  const [hold, setHold] = useState("30m");
  const path = `/v1/sandboxes/${encodeURIComponent(sb.id)}`;

  const run = async (verb) => {
    if (verb === "delete") {
      await del(path, needsForce(sb) ? { force: "true" } : undefined);
      navigate("/");
      return;
    }
    await post(`${path}/${verb}`);
    // An ephemeral sandbox is gone once stopped.
    if (verb === "stop" && sb.mode === "ephemeral") navigate("/");
    else onChange();
  };
  const click = async (verb) => {
    if (verb === "stop" || verb === "archive" || verb === "delete") {
      setAsk(verb);
      return;
    }
    setBusy(verb);
    setError(null);
    try {
      await run(verb);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(null);
    }
  };
  const keepalive = async (e) => {
    e.preventDefault();
    setBusy("keepalive");
    setError(null);
    try {
      await post(`${path}/keepalive`, { duration: hold.trim() });
      onChange();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(null);
    }
  };

  const shown = VERBS.filter(([v]) => offered(v, sb));
  return (
    <div class="actions">
      <div class="buttons" role="group" aria-label="Lifecycle">
        {shown.map(([v, label]) => (
          <button
            type="button"
            class={v === "delete" ? "danger-outline" : ""}
            onClick={() => click(v)}
            disabled={!!busy}
            data-testid={`action-${v}`}
          >
            {busy === v ? `${label}…` : label}
          </button>
        ))}
      </div>
      {sb.state === "running" || sb.state === "paused" ? (
        <form class="keepalive" onSubmit={keepalive}>
          <label for="keepalive-for">Keep alive for</label>
          <input id="keepalive-for" value={hold} onInput={(e) => setHold(e.currentTarget.value)} size="6" />
          <button type="submit" disabled={!!busy} data-testid="action-keepalive">
            {busy === "keepalive" ? "Holding…" : "Keep alive"}
          </button>
          {sb.hold_until && sb.hold_until > Date.now() ? (
            <span class="hint">idle and TTL policies held off for {relative(sb.hold_until).replace(/^in /, "")} more</span>
          ) : null}
        </form>
      ) : null}
      <ErrorBox error={error} title="Refused" />
      {ask ? <Ask verb={ask} sb={sb} run={run} onClose={() => setAsk(null)} /> : null}
    </div>
  );
}

/** The confirmation of a stop, archive or delete: what will happen. */
function Ask({ verb, sb, run, onClose }) {
  let title;
  let body;
  let confirm;
  if (verb === "stop") {
    title = `Stop ${sb.name}?`;
    confirm = "Stop";
    body =
      sb.mode === "ephemeral" ? (
        <p>
          <strong>{sb.name} is ephemeral: stopping it deletes it and all its data.</strong>
        </p>
      ) : (
        <p>Its processes end; its files stay and Start runs it again.</p>
      );
  } else if (verb === "archive") {
    title = `Archive ${sb.name}?`;
    confirm = "Archive";
    body = (
      <p>
        Its volume moves into the snapshot store and the local copy is freed. Start brings it back (slower than a plain
        start){sb.state === "hibernated" ? "; its saved memory is archived too and Resume restores it warm" : ""}.
      </p>
    );
  } else {
    const force = needsForce(sb);
    title = `Delete ${sb.name}?`;
    confirm = force ? "Stop and delete" : "Delete";
    body = (
      <>
        <p>
          <strong>The sandbox and all its files are deleted for good.</strong> Its snapshots are kept.
        </p>
        {force ? (
          <p data-testid="force-note">
            It is {sb.state}: it will be stopped first (the request is sent with <code>force=true</code>).
          </p>
        ) : null}
      </>
    );
  }
  return (
    <Confirm title={title} confirm={confirm} danger={verb !== "archive"} onConfirm={() => run(verb)} onClose={onClose}>
      {body}
    </Confirm>
  );
}
