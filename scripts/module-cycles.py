#!/usr/bin/env python3
"""Import cycles between the files of a Rust crate.

Builds the file-level graph of `crate::a::b`, `super::x`, `self::x` and
bare `child::x` references in `<crate>/src` (in `use` items and in paths
inside code; comments and string literals are skipped) and prints each strongly connected component of more
than `--max` files (default 2). Exits 1 when there is one.

    scripts/module-cycles.py crates/control
"""

import argparse
import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:\s*::\s*[A-Za-z_][A-Za-z0-9_]*)+)")
BARE = re.compile(r"(?<![\w:])([a-z_][a-z0-9_]*)\s*::")
USE_GROUP = re.compile(r"\b(crate|super|self)((?:\s*::\s*[A-Za-z_][A-Za-z0-9_]*)*)\s*::\s*\{")


def strip(text):
    """Source without comments, string and char literals (kept as blanks)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:]):
            i += len(re.match(r"'(\\.[^']*|[^\\'])'", text[i:]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_files(src):
    """Map module path (tuple) -> file, for every .rs file under src."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel in (["lib"], ["main"]):
                key = ()
            elif rel[-1] == "mod":
                key = tuple(rel[:-1])
            else:
                key = tuple(rel)
            mods[key] = path
    return mods


def resolve(mods, segments):
    """The file of the longest module prefix of `segments`."""
    for k in range(len(segments), -1, -1):
        if tuple(segments[:k]) in mods:
            return tuple(segments[:k])
    return None


def graph(src):
    mods = module_files(src)
    edges = {m: set() for m in mods}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as fh:
            text = strip(fh.read())
        # A file's own module path: for `a/mod.rs` and `a.rs` alike, `super`
        # is the parent of `mod`.
        refs = []
        for m in PATH.finditer(text):
            refs.append((m.group(1), [s.strip() for s in m.group(2).split("::") if s.strip()]))
        for m in USE_GROUP.finditer(text):
            # `use crate::a::{b, c::d}`: each inner item may be a module.
            start = m.end()
            depth, j = 1, start
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            base = [s.strip() for s in m.group(2).split("::") if s.strip()]
            for item in re.split(r"[,{}]", text[start:j - 1]):
                item = item.strip().split(" as ")[0].strip()
                if item and item != "self" and re.match(r"^[A-Za-z_][\w:\s]*$", item):
                    refs.append((m.group(1), base + [s.strip() for s in item.split("::") if s.strip()]))
        # A bare path into a child module (`start::run` in `reconcile/mod.rs`).
        for m in BARE.finditer(text):
            if mod + (m.group(1),) in mods:
                refs.append(("self", [m.group(1)]))
        for root, segs in refs:
            if root == "crate":
                target = list(segs)
            elif root == "super":
                parent, rest = list(mod[:-1]), list(segs)
                while rest and rest[0] == "super":
                    parent, rest = parent[:-1], rest[1:]
                target = parent + rest
            else:
                target = list(mod) + list(segs)
            t = resolve(mods, target)
            if t is not None and t != mod and t != ():
                edges[mod].add(t)
    return mods, edges


def sccs(nodes, edges):
    """Tarjan's strongly connected components."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("crate", help="the crate's directory (its src/ is read)")
    ap.add_argument("--max", type=int, default=2, help="largest allowed cycle, in files")
    args = ap.parse_args()
    src = os.path.join(args.crate, "src")
    if not os.path.isdir(src):
        sys.exit(f"{src} is not a directory; pass a crate directory such as crates/control")
    mods, edges = graph(src)
    bad = [c for c in sccs(mods, edges) if len(c) > args.max]
    for comp in sorted(bad, key=len, reverse=True):
        files = sorted(os.path.relpath(mods[m], args.crate) for m in comp)
        print(f"cycle of {len(files)} files:")
        for f in files:
            print(f"  {f}")
    biggest = max((len(c) for c in sccs(mods, edges)), default=0)
    print(f"{len(mods)} files, largest cycle {biggest} file(s), {len(bad)} cycle(s) over {args.max}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
