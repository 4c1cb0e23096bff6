// One sandbox: its name and state (announced as it changes), every
// lifecycle action its state allows, a keepalive, and tabs for the
// overview, events, processes, files, diff, snapshots, ports and the
// terminal. The sandbox is inspected every 2 s; each tab is its own file
// under pages/sandbox/ (files and terminal: pages/files.jsx and
// pages/terminal.jsx, the terminal loaded on demand).
import { useRef } from "preact/hooks";
import { get } from "../api.js";
import { Link } from "../router.jsx";
import { cpuPercent, ErrorBox, Lazy, Loading, StateBadge, time, usePoll } from "../ui.jsx";
import Actions from "./sandbox/actions.jsx";
import Overview from "./sandbox/overview.jsx";
import Events from "./sandbox/events.jsx";
import Processes from "./sandbox/processes.jsx";
import Diff from "./sandbox/diff.jsx";
import Snapshots from "./sandbox/snapshots.jsx";
import Ports from "./sandbox/ports.jsx";
import Files from "./files.jsx";

// One function for the page's life: Lazy loads again when `load` changes.
const loadTerminal = () => import("./terminal.jsx");

const TABS = [
  ["overview", "Overview"],
  ["events", "Events"],
  ["processes", "Processes"],
  ["files", "Files"],
  ["diff", "Diff"],
  ["snapshots", "Snapshots"],
  ["ports", "Ports"],
  ["terminal", "Terminal"],
];

export default function SandboxPage({ id, tab }) {
  const { data, error, loading, reload } = usePoll(
    async () => ({ sb: await get(`/v1/sandboxes/${encodeURIComponent(id)}`), at: Date.now() }),
    [id],
    2000
  );
  const cpuMemo = useRef(new Map());
  const stable = useRef(null);
  if (loading && !data) return <Loading what={`sandbox ${id}`} />;
  if (!data || (error && error.status === 404)) {
    return (
      <section>
        <h1>{id}</h1>
        <ErrorBox error={error} title={error && error.status === 404 ? "No such sandbox" : "Could not load the sandbox"} />
        <p>
          <Link href="/">Back to the sandboxes</Link>
        </p>
      </section>
    );
  }
  const sb = data.sb;
  // The files and terminal tabs get the same object until the sandbox's
  // id, name or state changes: a poll does not re-run their effects.
  const s0 = stable.current;
  if (!s0 || s0.id !== sb.id || s0.name !== sb.name || s0.state !== sb.state) stable.current = sb;
  const steady = stable.current;
  const cpu = cpuPercent(cpuMemo.current, sb.id, sb.stats ? sb.stats.cpu_usage_ns : null, data.at);
  const base = `/sandboxes/${encodeURIComponent(id)}`;
  const known = TABS.some(([t]) => t === tab);
  return (
    <section class="sb-page" aria-labelledby="sb-title">
      <div class="page-head">
        <div>
          <p class="crumbs">
            <Link href="/">Sandboxes</Link> /
          </p>
          <h1 id="sb-title">
            {sb.name}{" "}
            <span aria-live="polite" aria-atomic="true">
              <StateBadge state={sb.state} data-testid="sandbox-state" />
              {sb.desired_state !== sb.state && sb.state !== "error" ? <span class="sub"> → {sb.desired_state}</span> : null}
            </span>
          </h1>
          <p class="sub">
            <span class="mono">{sb.id}</span> · {sb.mode} · {sb.runtime} · <span class="mono">{sb.image}</span>
            {sb.reason ? <> · {sb.reason}</> : null}
          </p>
        </div>
      </div>
      {/* A failed refresh keeps the last view, with the error above it. */}
      <ErrorBox error={error} title="Could not refresh the sandbox" />
      <Actions sb={sb} onChange={reload} />
      <nav class="tabs" aria-label="Sandbox">
        {TABS.map(([t, label]) => (
          <Link href={`${base}/${t}`} data-testid={`tab-${t}`} aria-current={tab === t ? "page" : undefined}>
            {label}
          </Link>
        ))}
      </nav>
      <div class="tab-body">
        {tab === "overview" || !known ? <Overview sb={sb} cpu={cpu} onChange={reload} /> : null}
        {tab === "events" ? <Events sb={sb} /> : null}
        {tab === "processes" ? <Processes sb={sb} /> : null}
        {tab === "files" ? <Files sandbox={steady} /> : null}
        {tab === "diff" ? <Diff sb={sb} /> : null}
        {tab === "snapshots" ? <Snapshots sb={sb} onChange={reload} /> : null}
        {tab === "ports" ? <Ports sb={sb} onChange={reload} /> : null}
        {tab === "terminal" ? <Lazy load={loadTerminal} sandbox={steady} /> : null}
      </div>
      <p class="sub updated">Updated {time(data.at)}</p>
    </section>
  );
}
