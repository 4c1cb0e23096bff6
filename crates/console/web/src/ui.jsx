// Small shared pieces of the console's pages: formatting, polling, error and
// empty states, the confirmation dialog, lazily loaded modules.
import { useEffect, useRef, useState, useCallback } from "preact/hooks";

/** `1.5 GiB` */
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/** A Unix-ms time as local date and time. */
export function time(ms) {
  if (!ms) return "–";
  return new Date(ms).toLocaleString();
}

/** How long until (or since) a Unix-ms time: `in 5m`, `3h ago`. */
export function relative(ms, now = Date.now()) {
  if (!ms) return "–";
  const d = Math.round((ms - now) / 1000);
  const a = Math.abs(d);
  // The browser's clock and the daemon's differ by a little.
  if (a < 5) return "just now";
  const s =
    a < 60 ? `${a}s` : a < 3600 ? `${Math.round(a / 60)}m` : a < 86400 ? `${Math.round(a / 3600)}h` : `${Math.round(a / 86400)}d`;
  return d >= 0 ? `in ${s}` : `${s} ago`;
}

/**
 * Loads `load()` now and every `everyMs` (live updates without reloading),
 * while the page is visible. Returns {data, error, loading, reload}.
 */
export function usePoll(load, deps, everyMs = 0) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(true);
  const seq = useRef(0);
  const reload = useCallback(async () => {
    const mine = ++seq.current;
    try {
      const d = await load();
      if (mine === seq.current) {
        setData(d);
        setError(null);
      }
    } catch (e) {
      if (mine === seq.current) setError(e);
    } finally {
      if (mine === seq.current) setLoading(false);
    }
  }, deps);
  useEffect(() => {
    setLoading(true);
    reload();
    if (!everyMs) return undefined;
    const t = setInterval(() => {
      if (document.visibilityState === "visible") reload();
    }, everyMs);
    return () => clearInterval(t);
  }, [reload, everyMs]);
  return { data, error, loading, reload };
}

/** An API error (or any error) as a readable alert. */
export function ErrorBox({ error, title }) {
  if (!error) return null;
  return (
    <div class="error" role="alert" data-testid="error">
      <strong>{title || "Something went wrong"}</strong>
      {error.code && error.code !== "error" ? <code class="code">{error.code}</code> : null}
      <div>{error.message || String(error)}</div>
    </div>
  );
}

/** What a page shows when a list is empty. */
export function Empty({ children }) {
  return (
    <div class="empty" data-testid="empty">
      {children}
    </div>
  );
}

export function Loading({ what }) {
  return (
    <div class="loading" aria-busy="true">
      Loading {what || ""}…
    </div>
  );
}

/**
 * A modal confirmation: `title`, `children` (what will happen), and a button
 * labelled `confirm`; resolves `onConfirm` and shows its error in place.
 */
export function Confirm({ title, confirm = "Confirm", danger, onConfirm, onClose, children }) {
  const ref = useRef(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
  }, []);
  const go = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onConfirm();
      onClose();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return (
    <dialog ref={ref} class="confirm" aria-labelledby="confirm-title" onClose={onClose} data-testid="confirm">
      <form method="dialog" onSubmit={go}>
        <h2 id="confirm-title">{title}</h2>
        <div>{children}</div>
        <ErrorBox error={error} title="Refused" />
        <div class="buttons">
          <button type="button" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" class={danger ? "danger" : "primary"} disabled={busy} data-testid="confirm-ok" autofocus>
            {busy ? "Working…" : confirm}
          </button>
        </div>
      </form>
    </dialog>
  );
}

/** Renders the default export of a module loaded on demand (its own chunk). */
export function Lazy({ load, ...props }) {
  const [C, setC] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let live = true;
    load().then(
      (m) => live && setC(() => m.default),
      (e) => live && setError(e)
    );
    return () => {
      live = false;
    };
  }, [load]);
  if (error) return <ErrorBox error={error} title="Could not load this part of the console" />;
  if (!C) return <Loading />;
  return <C {...props} />;
}

/* pages: list, create, sandbox — shared pieces of the sandbox pages. */

/** Milliseconds as a duration the API reads back: `1h30m`, `45s`, `7d`. */
export function duration(ms) {
  if (ms === null || ms === undefined) return "";
  let s = Math.round(Number(ms) / 1000);
  if (s <= 0) return "0s";
  const parts = [];
  for (const [unit, n] of [
    ["d", 86400],
    ["h", 3600],
    ["m", 60],
    ["s", 1],
  ]) {
    if (s >= n) {
      parts.push(`${Math.floor(s / n)}${unit}`);
      s %= n;
    }
  }
  return parts.join("");
}

/**
 * A duration typed by a user (`30s`, `1h30m`, `500ms`, `2d`, or plain
 * seconds) in milliseconds; throws an Error naming the field otherwise.
 */
export function parseDuration(text, field) {
  const t = String(text).trim();
  if (/^\d+$/.test(t)) return Number(t) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|d|h|m|s)/gy;
  let ms = 0;
  let m;
  let end = 0;
  const scale = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 };
  while ((m = re.exec(t))) {
    ms += Number(m[1]) * scale[m[2]];
    end = re.lastIndex;
  }
  if (!t || end !== t.length) throw new Error(`${field}: "${t}" is not a duration; write it like 30s, 10m, 1h30m or 7d`);
  return Math.round(ms);
}

/** A sandbox's state as a coloured badge (the text says it too). */
export function StateBadge({ state, ...rest }) {
  return (
    <span class={`badge state-${state}`} {...rest}>
      {state}
    </span>
  );
}

/** The soonest scheduled policy of a sandbox (`schedule[0]`) as text. */
export function nextDeadline(schedule, now = Date.now()) {
  const s = schedule && schedule[0];
  if (!s) return null;
  return `${s.action} ${relative(s.at, now)}`;
}

/** `KEY=VALUE` lines (or comma-separated) as an object; throws on a bad line. */
export function keyValues(text, field) {
  const out = {};
  for (const line of String(text || "").split(/\n/)) {
    const l = line.trim();
    if (!l) continue;
    const i = l.indexOf("=");
    if (i <= 0) throw new Error(`${field}: "${l}" is not KEY=VALUE`);
    out[l.slice(0, i).trim()] = l.slice(i + 1);
  }
  return out;
}

/** Entries separated by commas, spaces or new lines. */
export function splitList(text) {
  return String(text || "")
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * CPU use from two samples of a cumulative counter: percent of one core
 * between the previous call for `key` and this one. `memo` is a Map kept by
 * the caller (a ref) across polls.
 */
export function cpuPercent(memo, key, cpuNs, at) {
  if (cpuNs === undefined || cpuNs === null) {
    memo.delete(key);
    return null;
  }
  const prev = memo.get(key);
  let pct = prev ? prev.pct : null;
  if (prev && at > prev.at) {
    pct = cpuNs >= prev.ns ? ((cpuNs - prev.ns) / ((at - prev.at) * 1e6)) * 100 : null;
  }
  if (!prev || at > prev.at) memo.set(key, { ns: cpuNs, at, pct });
  return pct;
}
