// How a sandbox differs from its image (`GET .../diff`): Debian packages
// installed, removed or changed, and files added, changed or deleted.
// Computing it reads the whole volume, so it is read on opening the tab
// and on "Refresh", not polled.
import { useState } from "preact/hooks";
import { get } from "../../api.js";
import { bytes, Empty, ErrorBox, Loading, usePoll } from "../../ui.jsx";

const SHOWN = 300;

function PackageList({ title, list, was }) {
  if (!list || !list.length) return null;
  return (
    <>
      <h3>
        {title} ({list.length})
      </h3>
      <ul class="pkgs mono">
        {list.map((p) => (
          <li>
            {p.name} {was && p.was ? `${p.was} → ` : ""}
            {p.version}
          </li>
        ))}
      </ul>
    </>
  );
}

export default function Diff({ sb }) {
  const { data, error, loading, reload } = usePoll(() => get(`/v1/sandboxes/${encodeURIComponent(sb.id)}/diff`), [sb.id], 0);
  const [all, setAll] = useState(false);
  const [busy, setBusy] = useState(false);
  const refresh = async () => {
    setBusy(true);
    await reload();
    setBusy(false);
  };
  const [filter, setFilter] = useState("");
  const files = data ? data.files.filter((f) => !filter || f.path.includes(filter)) : [];
  const pk = data ? data.packages : null;
  const nothing = data && !data.files.length && !pk.installed.length && !pk.removed.length && !pk.changed.length;
  return (
    <section aria-labelledby="diff-title">
      <div class="section-head">
        <h2 id="diff-title">Changes against the image</h2>
        <button type="button" onClick={refresh} disabled={loading || busy}>
          {loading || busy ? "Comparing…" : "Refresh"}
        </button>
      </div>
      <ErrorBox error={error} title="Could not compare with the image" />
      {loading && !data ? <Loading what="the diff" /> : null}
      {nothing ? <Empty>No package or file differs from the image {sb.image}.</Empty> : null}
      {data && !nothing ? (
        <>
          <p>
            {bytes(data.bytes)} added or changed; {data.files.length} paths, {pk.installed.length + pk.removed.length + pk.changed.length}{" "}
            packages.
          </p>
          <PackageList title="Packages installed" list={pk.installed} />
          <PackageList title="Packages removed" list={pk.removed} />
          <PackageList title="Packages changed" list={pk.changed} was />
          {data.files.length ? (
            <>
              <h3>Files ({data.files.length})</h3>
              <label>
                Filter{" "}
                <input type="search" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} placeholder="path contains" />
              </label>
              <div class="table-wrap">
                <table class="compact" data-testid="diff-files">
                  <thead>
                    <tr>
                      <th scope="col">Change</th>
                      <th scope="col">Path</th>
                      <th scope="col">Size</th>
                    </tr>
                  </thead>
                  <tbody>
                    {(all ? files : files.slice(0, SHOWN)).map((f) => (
                      <tr>
                        <td>
                          <span class={`badge chg-${f.change}`}>{f.change}</span>
                        </td>
                        <td class="mono wrap">
                          {f.path}
                          {f.dir ? "/" : ""}
                        </td>
                        <td class="num">{f.dir || f.change === "deleted" ? "" : bytes(f.size)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
              {!all && files.length > SHOWN ? <button onClick={() => setAll(true)}>Show all {files.length} paths</button> : null}
            </>
          ) : null}
        </>
      ) : null}
    </section>
  );
}
