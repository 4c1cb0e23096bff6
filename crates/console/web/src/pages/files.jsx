// The sandbox's files: browse directories (`GET .../fs/list`), breadcrumbs,
// upload (a file input or drag and drop, `PUT .../files` streams the bytes),
// download (`GET .../files` to a blob), make a directory (`POST .../fs/mkdir`)
// and delete (`DELETE .../files`, after a confirmation). Everything goes
// through the public API, which runs it in the sandbox through its agent.
import { useMemo, useRef, useState } from "preact/hooks";
import { api, get, post } from "../api.js";
import { bytes, time, usePoll, ErrorBox, Empty, Loading, Confirm } from "../ui.jsx";

/** `/a/b` + `c` = `/a/b/c`. */
function join(dir, name) {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

/** `/a/b/c` -> [["/", "/"], ["a", "/a"], ["b", "/a/b"], ["c", "/a/b/c"]]. */
function crumbs(path) {
  const out = [["/", "/"]];
  let acc = "";
  for (const part of path.split("/").filter(Boolean)) {
    acc += `/${part}`;
    out.push([part, acc]);
  }
  return out;
}

/** Permission bits as `rwxr-xr-x`. */
function perms(mode) {
  const m = Number(mode) & 0o777;
  let s = "";
  for (let shift = 6; shift >= 0; shift -= 3) {
    const b = (m >> shift) & 7;
    s += (b & 4 ? "r" : "-") + (b & 2 ? "w" : "-") + (b & 1 ? "x" : "-");
  }
  return s;
}

/** A path the user typed, made absolute and tidy (no `.`/`..` games: the agent resolves inside the sandbox). */
function normalize(p) {
  const t = p.trim();
  if (!t) return "/";
  const abs = t.startsWith("/") ? t : `/${t}`;
  const cleaned = abs.replace(/\/+/g, "/");
  return cleaned.length > 1 ? cleaned.replace(/\/$/, "") : cleaned;
}

const KIND_ORDER = { dir: 0, symlink: 1, file: 2, other: 3 };

export default function FilesPage({ sandbox }) {
  const id = encodeURIComponent(sandbox.id);
  const [path, setPath] = useState("/");
  const [typed, setTyped] = useState("/");
  const [busy, setBusy] = useState(null);
  const [actionError, setActionError] = useState(null);
  const [done, setDone] = useState(null);
  const [removing, setRemoving] = useState(null);
  const [mkdirName, setMkdirName] = useState("");
  const [dragging, setDragging] = useState(false);
  const input = useRef(null);

  const { data, error, loading, reload } = usePoll(() => get(`/v1/sandboxes/${id}/fs/list`, { path }), [id, path]);
  const entries = useMemo(() => {
    const list = (data || []).filter((e) => e.path !== path);
    return list.sort((a, b) => (KIND_ORDER[a.kind] ?? 9) - (KIND_ORDER[b.kind] ?? 9) || a.name.localeCompare(b.name));
  }, [data, path]);

  const go = (p) => {
    const n = normalize(p);
    setPath(n);
    setTyped(n);
    setActionError(null);
    setDone(null);
  };

  // `changes`: the action changed the directory (upload, mkdir, delete),
  // so it is listed again; a download changes nothing.
  const run = async (what, f, changes = true) => {
    setBusy(what);
    setActionError(null);
    setDone(null);
    try {
      const msg = await f();
      setDone(msg || null);
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy(null);
      if (changes) reload();
    }
  };

  const upload = (files) => {
    const list = Array.from(files || []);
    if (!list.length) return;
    run(`Uploading ${list.length === 1 ? list[0].name : `${list.length} files`}…`, async () => {
      let total = 0;
      for (const f of list) {
        const w = await api("PUT", `/v1/sandboxes/${id}/files`, { query: { path: join(path, f.name) }, body: f });
        total += w ? w.bytes : f.size;
      }
      if (input.current) input.current.value = "";
      return `Uploaded ${list.map((f) => f.name).join(", ")} (${bytes(total)}) to ${path}.`;
    });
  };

  const download = (e) =>
    run(`Downloading ${e.name}…`, async () => {
      const res = await api("GET", `/v1/sandboxes/${id}/files`, { query: { path: e.path }, raw: true });
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = e.name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      return `Downloaded ${e.name} (${bytes(blob.size)}).`;
    }, false);

  const mkdir = (ev) => {
    ev.preventDefault();
    const name = ev.currentTarget.elements.namedItem("files-mkdir").value.trim();
    if (!name) return;
    const target = name.startsWith("/") ? normalize(name) : join(path, name);
    run(`Making ${target}…`, async () => {
      await post(`/v1/sandboxes/${id}/fs/mkdir`, { path: target, parents: true });
      setMkdirName("");
      return `Made ${target}.`;
    });
  };

  const onDrop = (e) => {
    e.preventDefault();
    setDragging(false);
    upload(e.dataTransfer && e.dataTransfer.files);
  };
  const onDragOver = (e) => {
    if (e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files")) {
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
      setDragging(true);
    }
  };

  return (
    <section
      class={`files-page${dragging ? " dragging" : ""}`}
      aria-label={`Files of ${sandbox.name}`}
      onDragOver={onDragOver}
      onDragLeave={(e) => {
        if (!e.currentTarget.contains(e.relatedTarget)) setDragging(false);
      }}
      onDrop={onDrop}
    >
      <nav class="crumbs" aria-label="Directory">
        <ol>
          {crumbs(path).map(([label, p], i, all) => (
            <li>
              {i === all.length - 1 ? (
                <span aria-current="location">{label}</span>
              ) : (
                <button type="button" class="link" onClick={() => go(p)}>
                  {label}
                </button>
              )}
            </li>
          ))}
        </ol>
      </nav>

      <div class="files-tools">
        <form
          class="files-goto"
          onSubmit={(e) => {
            e.preventDefault();
            go(e.currentTarget.elements.namedItem("files-path").value);
          }}
        >
          <label for="files-path">Path</label>
          <input id="files-path" name="files-path" value={typed} onInput={(e) => setTyped(e.currentTarget.value)} spellcheck={false} />
          <button type="submit">Go</button>
        </form>
        <form class="files-mkdir" onSubmit={mkdir}>
          <label for="files-mkdir">New directory</label>
          <input
            id="files-mkdir"
            name="files-mkdir"
            value={mkdirName}
            onInput={(e) => setMkdirName(e.currentTarget.value)}
            placeholder="name"
            spellcheck={false}
            data-testid="mkdir-name"
          />
          <button type="submit" disabled={!!busy || !mkdirName.trim()} data-testid="mkdir">
            Make
          </button>
        </form>
        <div class="files-upload">
          <label for="files-upload">Upload to {path}</label>
          <input
            id="files-upload"
            ref={input}
            type="file"
            multiple
            disabled={!!busy}
            onChange={(e) => upload(e.currentTarget.files)}
            data-testid="upload"
          />
        </div>
        <button type="button" onClick={reload} disabled={loading}>
          Refresh
        </button>
      </div>

      <div role="status" aria-live="polite" class="files-status" data-testid="files-status">
        {busy || done || (dragging ? `Drop to upload to ${path}` : "")}
      </div>
      <ErrorBox error={actionError} title="The sandbox refused" />
      <ErrorBox error={error} title={`Cannot list ${path}`} />

      {loading && !data ? (
        <Loading what={path} />
      ) : !error && entries.length === 0 ? (
        <Empty>
          {path} is empty. Drop files here or use <em>Upload</em>.
        </Empty>
      ) : !error ? (
        <div class="table-wrap">
          <table class="files-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col" class="num">
                  Size
                </th>
                <th scope="col" class="opt">Mode</th>
                <th scope="col" class="opt">Modified</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {path !== "/" ? (
                <tr>
                  <td colSpan={5}>
                    <button type="button" class="link" onClick={() => go(path.replace(/\/[^/]*$/, "") || "/")}>
                      .. (up)
                    </button>
                  </td>
                </tr>
              ) : null}
              {entries.map((e) => (
                <tr data-testid="file-row" data-name={e.name} key={e.path}>
                  <td class="name">
                    {e.kind === "dir" ? (
                      <button type="button" class="link" onClick={() => go(e.path)} aria-label={`Open directory ${e.name}`}>
                        {e.name}/
                      </button>
                    ) : (
                      <span>{e.name}</span>
                    )}
                    {e.kind === "symlink" ? (
                      <span class="hint">
                        {" "}
                        → {e.symlink_target}{" "}
                        <button type="button" class="link" onClick={() => go(e.symlink_target.startsWith("/") ? e.symlink_target : join(path, e.symlink_target))}>
                          (open)
                        </button>
                      </span>
                    ) : null}
                  </td>
                  <td class="num">{e.kind === "file" ? bytes(e.size) : ""}</td>
                  <td class="opt">
                    <code>{perms(e.mode)}</code>
                  </td>
                  <td class="opt">{time(e.modified_ms)}</td>
                  <td class="row-actions">
                    {e.kind === "file" ? (
                      <button type="button" onClick={() => download(e)} disabled={!!busy} aria-label={`Download ${e.name}`}>
                        Download
                      </button>
                    ) : null}
                    <button type="button" onClick={() => setRemoving(e)} disabled={!!busy} aria-label={`Delete ${e.name}`} data-testid="file-delete">
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}

      {removing ? (
        <Confirm
          title={`Delete ${removing.name}?`}
          confirm="Delete"
          danger
          onClose={() => setRemoving(null)}
          onConfirm={async () => {
            await api("DELETE", `/v1/sandboxes/${id}/files`, {
              query: { path: removing.path, recursive: removing.kind === "dir" ? "true" : undefined },
            });
            setDone(`Deleted ${removing.path}.`);
            reload();
          }}
        >
          {removing.kind === "dir" ? (
            <p>
              <code>{removing.path}</code> is a directory: it and everything under it will be removed from the sandbox.
            </p>
          ) : (
            <p>
              <code>{removing.path}</code> will be removed from the sandbox. There is no undo (a snapshot keeps a copy).
            </p>
          )}
        </Confirm>
      ) : null}
    </section>
  );
}
