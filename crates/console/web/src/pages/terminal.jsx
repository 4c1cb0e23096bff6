// The sandbox's terminal: xterm.js on a login shell that runs on a PTY in the
// sandbox, over the exec WebSocket of the public API (crates/contract/src/
// exec.rs). The shell runs in the background (`background: true`, tag
// `console`), so a dropped connection does not end it: the page re-attaches
// to the same pid with backoff, and coming back to the tab re-attaches too.
// Loaded on demand (its own chunk, with xterm's CSS injected by hand).
import { useEffect, useRef, useState } from "preact/hooks";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import xtermCss from "@xterm/xterm/css/xterm.css" with { type: "text" };
import { actFor, get, post, wsUrl } from "../api.js";
import { ErrorBox } from "../ui.jsx";
import { injectCss } from "./inject-css.js";

const CH_STDIN = 0;
// bash when the image has it, else sh; a login shell either way. (Not
// `bash 2>/dev/null`: an interactive shell prints its prompt on stderr.)
const SHELL = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi";
/** Waits between re-attach attempts, in ms; the last one repeats. */
const BACKOFF = [250, 500, 1000, 2000, 4000, 8000];
/** Attempts before the page stops trying and offers a button instead. */
const MAX_ATTEMPTS = 12;

const enc = new TextEncoder();

/** Colours that read well on both the light and the dark console theme. */
const THEME = {
  background: "#15181c",
  foreground: "#e6e8eb",
  cursor: "#e6e8eb",
  selectionBackground: "#3b5b8c",
};

/** Where the pid of this sandbox's console shell is kept for this tab. */
function pidKey(sandbox) {
  return `dwell-terminal:${actFor() || ""}:${sandbox.id}`;
}

function exitText(m) {
  if (m.oom_killed) return "was killed: out of memory (the sandbox hit its memory limit)";
  if (m.timed_out) return "was killed: its timeout expired";
  if (m.signal != null) return `was killed by signal ${m.signal}`;
  return `exited with code ${m.code ?? "?"}`;
}

/**
 * One terminal connection's life: a new shell (exec) or a re-attach to a
 * pid, reconnects with backoff, and what the page shows (`onStatus`).
 */
class Conn {
  constructor(term, sandbox, onStatus) {
    this.term = term;
    this.sandbox = sandbox;
    this.onStatus = onStatus;
    this.ws = null;
    this.pid = null;
    this.attempt = 0;
    this.timer = null;
    this.closed = false;
    this.ended = false;
  }

  /** Starts: re-attaches to this tab's earlier shell when it still runs. */
  async start() {
    const saved = Number(sessionStorage.getItem(pidKey(this.sandbox)));
    if (saved > 0) {
      try {
        const procs = await get(`/v1/sandboxes/${encodeURIComponent(this.sandbox.id)}/processes`);
        if ((procs || []).some((p) => p.pid === saved && p.running)) {
          this.pid = saved;
        }
      } catch (_) {
        /* the connect below reports why the sandbox cannot run a shell */
      }
    }
    if (this.closed) return;
    this.connect();
  }

  /** A new shell, after the last one ended. */
  fresh() {
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
    this.pid = null;
    this.attempt = 0;
    this.ended = false;
    sessionStorage.removeItem(pidKey(this.sandbox));
    this.term.reset();
    this.connect();
  }

  /** Tries to re-attach now (the "Reconnect" button). */
  retry() {
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const id = encodeURIComponent(this.sandbox.id);
    const attaching = this.pid !== null;
    const path = attaching ? `/v1/sandboxes/${id}/processes/${this.pid}/attach` : `/v1/sandboxes/${id}/exec`;
    this.onStatus(attaching ? (this.attempt ? "reconnecting" : "attaching") : "connecting");
    let ws;
    try {
      ws = new WebSocket(wsUrl(path));
    } catch (e) {
      this.onStatus("failed", { code: "websocket", message: `cannot open a WebSocket: ${e.message}` });
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let started = false;
    ws.onopen = () => {
      if (!attaching) {
        ws.send(
          JSON.stringify({
            argv: ["/bin/sh", "-c", SHELL],
            env: { TERM: "xterm-256color", COLORTERM: "truecolor" },
            tty: { rows: this.term.rows, cols: this.term.cols },
            stdin: true,
            background: true,
            tag: "console",
          })
        );
      }
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        let m;
        try {
          m = JSON.parse(ev.data);
        } catch (_) {
          return;
        }
        if (m.type === "started") {
          started = true;
          this.attempt = 0;
          this.pid = m.pid;
          sessionStorage.setItem(pidKey(this.sandbox), String(m.pid));
          // What the process printed recently follows (the agent's replay
          // on attach): start from a clean screen so it is not shown twice.
          if (attaching) this.term.reset();
          this.resize();
          this.onStatus("open", { pid: m.pid });
        } else if (m.type === "exit") {
          this.ended = true;
          sessionStorage.removeItem(pidKey(this.sandbox));
          this.term.write(`\r\n\x1b[2m[the shell ${exitText(m)}]\x1b[0m\r\n`);
          this.onStatus("exited", { text: exitText(m), code: m.code });
        } else if (m.type === "error") {
          this.ended = true;
          if (attaching) sessionStorage.removeItem(pidKey(this.sandbox));
          this.onStatus("failed", { code: m.code, message: m.message });
        }
        return;
      }
      const b = new Uint8Array(ev.data);
      if (b.length > 1 && b[0] !== CH_STDIN) this.term.write(b.subarray(1));
    };
    ws.onclose = () => {
      if (this.ws === ws) this.ws = null;
      if (this.closed || this.ended) return;
      if (this.pid === null) {
        // Refused before a shell started: the upgrade's HTTP answer is not
        // readable from a WebSocket, so ask the API the same question.
        this.explain();
        return;
      }
      // A blip: the shell runs on in the background; attach to it again.
      if (started) this.term.write("\r\n\x1b[2m[connection lost; reconnecting…]\x1b[0m");
      this.attempt++;
      if (this.attempt > MAX_ATTEMPTS) {
        this.explain(true);
        return;
      }
      this.onStatus("reconnecting", { attempt: this.attempt });
      const wait = BACKOFF[Math.min(this.attempt - 1, BACKOFF.length - 1)];
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  /** Why no shell could start or be reached, in the API's own words. */
  async explain(lost) {
    try {
      await get(`/v1/sandboxes/${encodeURIComponent(this.sandbox.id)}/processes`);
      this.onStatus("failed", {
        code: lost ? "unreachable" : "websocket",
        message: lost
          ? "the connection to the terminal keeps dropping; the shell may still run. Reconnect, or start a new session."
          : "the terminal's WebSocket was refused or closed before a shell started (a proxy that does not pass WebSockets?)",
        lost,
      });
    } catch (e) {
      this.onStatus("failed", { code: e.code, message: e.message, lost });
    }
  }

  send(data) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const bytes = typeof data === "string" ? enc.encode(data) : data;
    const frame = new Uint8Array(bytes.length + 1);
    frame[0] = CH_STDIN;
    frame.set(bytes, 1);
    ws.send(frame);
  }

  control(msg) {
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  resize() {
    this.control({ type: "resize", rows: this.term.rows, cols: this.term.cols });
  }

  /** Closes the socket as a network blip would (tests). */
  drop() {
    if (this.ws) this.ws.close();
  }

  /** Leaves the page: the shell runs on, to be re-attached later. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }
}

function statusLine(status, info, sandbox) {
  switch (status) {
    case "connecting":
      if ((sandbox.state === "paused" || sandbox.state === "hibernated") && sandbox.wakes_on_use)
        return `${sandbox.name} is ${sandbox.state} and wakes on use: opening a shell resumes it…`;
      return "Starting a shell…";
    case "attaching":
      return "Re-attaching to this tab's shell…";
    case "open":
      return `Connected: login shell, pid ${info.pid}.`;
    case "reconnecting":
      return `Connection lost; reconnecting… (attempt ${info.attempt || 1})`;
    case "exited":
      return `The shell ${info.text}.`;
    case "failed":
      return "No terminal.";
    default:
      return "";
  }
}

/** Copies the terminal's selection (Ctrl+Shift+C, the Copy button). */
async function copySelection(term) {
  const text = term.getSelection();
  if (!text) return false;
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_) {
    // Without the async clipboard (plain http on another host): the
    // selection is still in the document's own selection for Ctrl+C.
    return false;
  }
}

export default function TerminalPage({ sandbox }) {
  const box = useRef(null);
  const conn = useRef(null);
  const termRef = useRef(null);
  const [status, setStatus] = useState("connecting");
  const [info, setInfo] = useState({});
  const [note, setNote] = useState(null);
  const [resuming, setResuming] = useState(false);

  useEffect(() => {
    injectCss("xterm", xtermCss);
    const term = new Terminal({
      cursorBlink: true,
      convertEol: false,
      scrollback: 5000,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      theme: THEME,
      allowProposedApi: false,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box.current);
    termRef.current = term;
    try {
      fit.fit();
    } catch (_) {
      /* not laid out yet; the observer fits it */
    }
    const c = new Conn(term, sandbox, (s, i = {}) => {
      setStatus(s);
      setInfo(i);
    });
    conn.current = c;
    window.__dwellTerminal = term;
    window.__dwellTerminalDrop = () => c.drop();

    term.onData((d) => c.send(d));
    term.onBinary((d) => c.send(Uint8Array.from(d, (ch) => ch.charCodeAt(0) & 0xff)));
    term.onResize(() => c.resize());
    term.attachCustomKeyEventHandler((e) => {
      if (e.type !== "keydown" || !e.ctrlKey || !e.shiftKey) return true;
      if (e.code === "KeyC") {
        // Copy, as terminals do; plain Ctrl+C stays an interrupt.
        if (term.hasSelection()) {
          copySelection(term);
          e.preventDefault();
        }
        return false;
      }
      if (e.code === "KeyV") {
        // Let the browser paste into xterm's textarea (a paste event
        // xterm turns into input, bracketed when the shell asked).
        return false;
      }
      return true;
    });

    let frame = 0;
    const ro = new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => {
        try {
          fit.fit();
        } catch (_) {
          /* hidden */
        }
      });
    });
    ro.observe(box.current);

    c.start();
    term.focus();
    return () => {
      ro.disconnect();
      cancelAnimationFrame(frame);
      c.close();
      if (window.__dwellTerminal === term) {
        delete window.__dwellTerminal;
        delete window.__dwellTerminalDrop;
      }
      term.dispose();
    };
  }, [sandbox.id]);

  const copy = async () => {
    const ok = await copySelection(termRef.current);
    setNote(ok ? "Copied the selection." : "Select text in the terminal first (or use Ctrl+C with the browser's selection).");
    termRef.current.focus();
  };
  const paste = async () => {
    try {
      const text = await navigator.clipboard.readText();
      if (text) termRef.current.paste(text);
      setNote(null);
    } catch (_) {
      setNote("The browser does not let the page read the clipboard here: press Ctrl+Shift+V (or right-click, Paste) in the terminal.");
    }
    termRef.current.focus();
  };
  const resume = async () => {
    setResuming(true);
    try {
      await post(`/v1/sandboxes/${encodeURIComponent(sandbox.id)}/resume`);
      conn.current.fresh();
    } catch (e) {
      setStatus("failed");
      setInfo({ code: e.code, message: e.message });
    } finally {
      setResuming(false);
    }
  };
  const endSession = () => {
    // SIGHUP, as closing a terminal window sends its shell.
    conn.current.control({ type: "signal", signal: 1 });
  };

  const failed = status === "failed";
  return (
    <section class="terminal-page" aria-label={`Terminal of ${sandbox.name}`}>
      <div class="terminal-bar">
        <span class={`terminal-status terminal-${status}`} role="status" aria-live="polite" data-testid="terminal-status">
          {statusLine(status, info, sandbox)}
        </span>
        <span class="terminal-actions">
          <button type="button" onClick={copy} title="Copy the selection (Ctrl+Shift+C)">
            Copy
          </button>
          <button type="button" onClick={paste} title="Paste (Ctrl+Shift+V)">
            Paste
          </button>
          {status === "open" ? (
            <button type="button" onClick={endSession} title="Send the shell SIGHUP" data-testid="terminal-end">
              End session
            </button>
          ) : null}
          {failed && info.lost ? (
            <button type="button" onClick={() => conn.current.retry()} data-testid="terminal-reconnect">
              Reconnect
            </button>
          ) : null}
          {failed && /^sandbox_(paused|hibernated)$/.test(info.code || "") ? (
            <button type="button" class="primary" onClick={resume} disabled={resuming} data-testid="terminal-resume">
              {resuming ? "Resuming…" : "Resume and open a shell"}
            </button>
          ) : null}
          {status === "exited" || failed ? (
            <button type="button" class="primary" onClick={() => conn.current.fresh()} data-testid="terminal-new">
              New session
            </button>
          ) : null}
        </span>
      </div>
      {failed ? <ErrorBox error={info} title="The terminal could not reach a shell" /> : null}
      {note ? (
        <p class="hint" role="status">
          {note}
        </p>
      ) : null}
      <div class="terminal-box" ref={box} data-testid="terminal" />
      <p class="hint terminal-help">
        Copy: select, then Ctrl+Shift+C. Paste: Ctrl+Shift+V. The shell keeps running when you leave this tab or
        the connection drops; <em>End session</em> hangs it up.
      </p>
    </section>
  );
}
