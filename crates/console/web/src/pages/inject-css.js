// A stylesheet of a chunk loaded on demand (xterm's, uPlot's): esbuild
// writes a lazily imported chunk's CSS to a file of its own that nothing
// links, so the chunk imports the CSS as text (`with { type: "text" }`) and
// adds it to the document once, as a <style> (the CSP allows inline styles).

const added = new Set();

/** Adds `text` as a <style data-dwell-css={name}> unless already there. */
export function injectCss(name, text) {
  if (added.has(name) || document.querySelector(`style[data-dwell-css="${name}"]`)) {
    added.add(name);
    return;
  }
  const s = document.createElement("style");
  s.dataset.dwellCss = name;
  s.textContent = text;
  document.head.appendChild(s);
  added.add(name);
}
