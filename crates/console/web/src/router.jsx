// Paths under /ui/ are the console's pages (the daemon answers index.html for
// each): history navigation without reloads, and a hook that re-renders on it.
import { useEffect, useState } from "preact/hooks";

const listeners = new Set();

/** The page path after /ui (`/`, `/sandboxes/web1`, ...). */
export function currentPath() {
  const p = location.pathname.replace(/^\/ui/, "");
  return p === "" ? "/" : p;
}

/** Goes to a page of the console (`/sandboxes/web1`). */
export function navigate(path, { replace = false } = {}) {
  const full = `/ui${path}`;
  if (replace) history.replaceState(null, "", full);
  else history.pushState(null, "", full);
  for (const f of listeners) f();
}

window.addEventListener("popstate", () => {
  for (const f of listeners) f();
});

/** The current page path, re-rendering on navigation. */
export function useRoute() {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const f = () => setPath(currentPath());
    listeners.add(f);
    return () => listeners.delete(f);
  }, []);
  return path;
}

/** A link to a console page that navigates without a reload. */
export function Link({ href, children, ...rest }) {
  const onClick = (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return (
    <a href={`/ui${href}`} onClick={onClick} {...rest}>
      {children}
    </a>
  );
}
