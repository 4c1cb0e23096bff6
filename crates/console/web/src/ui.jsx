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
