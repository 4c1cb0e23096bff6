// Bundles the console into one directory (argv[2]): index.html naming the
// hashed entry files, the entry JS and CSS, and the chunks loaded on demand
// (the terminal emulator and the chart library are not part of the first
// load). Run by crates/console/build.rs; `npm run build` for a look by hand.
import * as esbuild from "esbuild";
import { mkdirSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { join, basename, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
// build.rs runs a copy of this file beside the node_modules it installed,
// with the sources' directory in CONSOLE_SRC.
const src = process.env.CONSOLE_SRC || join(here, "src");
const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUTDIR");
  process.exit(2);
}
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const result = await esbuild.build({
  entryPoints: [join(src, "main.jsx")],
  nodePaths: [join(here, "node_modules")],
  bundle: true,
  splitting: true,
  format: "esm",
  minify: true,
  sourcemap: false,
  target: ["chrome100", "firefox100", "safari15"],
  jsx: "automatic",
  jsxImportSource: "preact",
  loader: { ".css": "css" },
  entryNames: "[name]-[hash]",
  chunkNames: "chunk-[hash]",
  assetNames: "asset-[hash]",
  outdir: out,
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
});

// The entry's JS and CSS, by their hashed names.
let js, css;
for (const [file, meta] of Object.entries(result.metafile.outputs)) {
  // Modules loaded with import() are entry points too: take main.jsx's.
  if (meta.entryPoint && basename(meta.entryPoint) === "main.jsx" && file.endsWith(".js")) js = basename(file);
  if (meta.entryPoint === undefined && file.endsWith(".css") && basename(file).startsWith("main-")) css = basename(file);
}
if (!js) throw new Error("esbuild wrote no entry script");
const html = readFileSync(join(src, "index.html"), "utf8")
  .replace("%MAIN_JS%", `/ui/${js}`)
  .replace("%MAIN_CSS%", css ? `<link rel="stylesheet" href="/ui/${css}">` : "");
writeFileSync(join(out, "index.html"), html);
