// Create a sandbox from an image or a snapshot, with every option of the
// API's CreateRequest (crates/contract/src/sandbox.rs): the common ones in
// view, the rest under "Advanced". `count` > 1 makes NAME-1 ... NAME-N, as
// `dwell create --count` does. The API's refusal is shown next to the form;
// on success the console goes to the new sandbox's page.
import { useMemo, useState } from "preact/hooks";
import { get, post } from "../api.js";
import { navigate } from "../router.jsx";
import { bytes, ErrorBox, keyValues, parseDuration, splitList, usePoll } from "../ui.jsx";

const POLICIES = [
  ["idle_timeout", "Idle timeout", "Pause after this long without an exec, file operation, open stream or keepalive."],
  ["ttl", "TTL", "Stop (ephemeral: delete) this long after creation or the last keepalive."],
  ["pause_after", "Stop after paused", "Stop after being paused this long."],
  ["archive_after", "Archive after stopped", "Move the volume into the snapshot store after being stopped this long."],
  ["delete_after", "Delete after stopped", "Delete after being stopped this long."],
  ["max_lifetime", "Max lifetime", "Hard cap on the sandbox's life from creation."],
];

/**
 * Splits a command line into words as a POSIX shell would for plain words,
 * single and double quotes and backslashes (no expansions).
 */
export function shellWords(text, field) {
  const words = [];
  let cur = null;
  let quote = null;
  const s = String(text);
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote === "'") {
      if (c === "'") quote = null;
      else cur += c;
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === "\\" && i + 1 < s.length && '"\\$`'.includes(s[i + 1])) cur += s[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      cur = cur ?? "";
    } else if (c === "\\") {
      if (i + 1 >= s.length) throw new Error(`${field}: a trailing backslash`);
      cur = (cur ?? "") + s[++i];
    } else if (/\s/.test(c)) {
      if (cur !== null) words.push(cur);
      cur = null;
    } else {
      cur = (cur ?? "") + c;
    }
  }
  if (quote) throw new Error(`${field}: an unterminated ${quote} quote`);
  if (cur !== null) words.push(cur);
  return words;
}

/** Volume bindings `NAME:/path[:ro]`, one a line. */
function volumeMounts(text) {
  return String(text || "")
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const p = l.split(":");
      if (p.length < 2 || p.length > 3 || !p[0] || !p[1].startsWith("/") || (p.length === 3 && p[2] !== "ro" && p[2] !== "rw"))
        throw new Error(`volumes: "${l}" is not NAME:/PATH or NAME:/PATH:ro`);
      return { name: p[0], path: p[1], read_only: p[2] === "ro" };
    });
}

/** The form's values as a CreateRequest; throws an Error on bad input. */
export function createRequest(f) {
  const req = {};
  const str = (v) => String(v || "").trim();
  if (str(f.name)) req.name = str(f.name);
  if (f.source === "snapshot") {
    if (!str(f.from)) throw new Error("pick the snapshot to start from");
    req.from = str(f.from);
  }
  if (str(f.image)) req.image = str(f.image);
  req.mode = f.mode;
  if (f.runtime) req.runtime = f.runtime;
  if (str(f.vcpus)) {
    const v = Number(f.vcpus);
    if (!(v > 0)) throw new Error(`vCPUs: "${f.vcpus}" is not a positive number of cores, like 1 or 0.5`);
    req.vcpus = v;
  }
  if (str(f.memory)) req.memory = /^\d+$/.test(str(f.memory)) ? Number(f.memory) : str(f.memory);
  if (str(f.disk)) req.disk = /^\d+$/.test(str(f.disk)) ? Number(f.disk) : str(f.disk);
  if (str(f.pids)) {
    if (!/^\d+$/.test(str(f.pids))) throw new Error(`processes: "${f.pids}" is not a whole number`);
    req.pids = Number(f.pids);
  }
  if (f.nat) {
    req.network = "nat";
    if (str(f.allow_out)) req.allow_out = splitList(f.allow_out);
    if (str(f.deny_out)) req.deny_out = splitList(f.deny_out);
  }
  const nets = splitList(f.networks);
  if (nets.length) req.networks = nets;
  const env = keyValues(f.env, "environment");
  if (Object.keys(env).length) req.env = env;
  const secret = keyValues(f.secret_env, "secret environment");
  if (Object.keys(secret).length) req.secret_env = secret;
  const labels = keyValues(f.labels, "labels");
  if (Object.keys(labels).length) req.labels = labels;
  const sel = keyValues(f.node_selector, "node selector");
  if (Object.keys(sel).length) req.node_selector = sel;
  const vols = volumeMounts(f.volumes);
  if (vols.length) req.volumes = vols;
  if (str(f.backup_every)) req.backup_every = str(f.backup_every);
  if (f.allow_raw_sockets) req.allow_raw_sockets = true;
  if (f.allow_core_dumps) req.allow_core_dumps = true;

  const policies = {};
  for (const [k] of POLICIES) if (str(f[k])) policies[k] = str(f[k]);
  if (f.ttl_action) policies.ttl_action = f.ttl_action;
  if (f.auto_resume) policies.auto_resume = f.auto_resume === "on";
  if (Object.keys(policies).length) req.policies = policies;

  const service = {};
  if (f.no_service) service.disabled = true;
  else {
    if (str(f.entrypoint)) service.entrypoint = shellWords(f.entrypoint, "entrypoint");
    if (str(f.cmd)) service.cmd = shellWords(f.cmd, "command");
    if (str(f.restart)) service.restart = str(f.restart);
    if (str(f.stop_signal)) service.stop_signal = str(f.stop_signal);
    if (str(f.stop_timeout)) service.stop_timeout_ms = parseDuration(f.stop_timeout, "stop timeout");
    if (f.no_healthcheck) service.no_healthcheck = true;
    else if (str(f.health_cmd)) {
      const h = { test: ["CMD-SHELL", str(f.health_cmd)] };
      if (str(f.health_interval)) h.interval_ms = parseDuration(f.health_interval, "health interval");
      if (str(f.health_timeout)) h.timeout_ms = parseDuration(f.health_timeout, "health timeout");
      if (str(f.health_start_period)) h.start_period_ms = parseDuration(f.health_start_period, "health start period");
      if (str(f.health_retries)) h.retries = Number(f.health_retries);
      service.healthcheck = h;
    } else if (str(f.health_interval) || str(f.health_timeout) || str(f.health_start_period) || str(f.health_retries)) {
      throw new Error("the health check's interval, timeout, start period and retries tune a check: give its command too");
    }
  }
  if (Object.keys(service).length) req.service = service;
  return req;
}

/** Creates `count` sandboxes (NAME-1 ... NAME-N when more than one). */
export async function createMany(req, count) {
  if (!(count >= 1)) throw new Error("count: give 1 or more");
  if (count === 1) return [await post("/v1/sandboxes", req)];
  if (!req.name) throw new Error("count needs a name: the sandboxes are named NAME-1 ... NAME-N");
  const made = [];
  for (let i = 1; i <= count; i++) {
    try {
      made.push(await post("/v1/sandboxes", { ...req, name: `${req.name}-${i}` }));
    } catch (e) {
      e.message = `created ${made.length} of ${count} sandboxes: ${e.message}`;
      throw e;
    }
  }
  return made;
}

const initial = () => {
  const q = new URLSearchParams(location.search);
  return {
    source: q.get("from") ? "snapshot" : "image",
    from: q.get("from") || "",
    image: q.get("image") || (q.get("from") ? "" : "host"),
    name: "",
    count: "1",
    mode: "persistent",
    runtime: "",
    vcpus: "",
    memory: "",
    disk: "",
    pids: "",
    nat: false,
    allow_out: "",
    deny_out: "",
    networks: "",
    env: "",
    secret_env: "",
    labels: "",
    node_selector: "",
    volumes: "",
    backup_every: "",
    allow_raw_sockets: false,
    allow_core_dumps: false,
    ttl_action: "",
    auto_resume: "",
    no_service: false,
    no_healthcheck: false,
  };
};

export default function CreateSandbox() {
  const [f, setF] = useState(initial);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const images = usePoll(() => get("/v1/images"), [], 0);
  const snapshots = usePoll(() => get("/v1/snapshots"), [], 0);
  const set = (k) => (e) => {
    const t = e.currentTarget;
    setF((old) => ({ ...old, [k]: t.type === "checkbox" ? t.checked : t.value }));
  };
  // A snapshot with saved memory fixes the image: start with none asked.
  const source = (e) => {
    const v = e.currentTarget.value;
    setF((old) => ({
      ...old,
      source: v,
      image: v === "snapshot" && old.image === "host" ? "" : v === "image" && !old.image ? "host" : old.image,
    }));
  };
  const field = (k) => ({ id: `c-${k}`, name: k, value: f[k] ?? "", onInput: set(k) });
  const check = (k) => ({ id: `c-${k}`, name: k, type: "checkbox", checked: !!f[k], onChange: set(k) });

  const imageNames = useMemo(() => {
    const names = new Set(["host", "host-user"]);
    for (const i of images.data || []) names.add(i.name);
    return Array.from(names);
  }, [images.data]);

  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    let req;
    try {
      req = createRequest(f);
    } catch (err) {
      setError({ code: "invalid", message: err.message });
      return;
    }
    setBusy(true);
    try {
      const made = await createMany(req, Number(f.count || 1));
      navigate(made.length === 1 ? `/sandboxes/${encodeURIComponent(made[0].name)}` : "/");
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  return (
    <section class="sb-create" aria-labelledby="create-title">
      <h1 id="create-title">Create a sandbox</h1>
      <form class="create" onSubmit={submit} data-testid="create-form" noValidate>
        <fieldset>
          <legend>Start from</legend>
          <div class="radios">
            <label>
              <input type="radio" name="source" value="image" checked={f.source === "image"} onChange={source} /> an image
            </label>
            <label>
              <input type="radio" name="source" value="snapshot" checked={f.source === "snapshot"} onChange={source} /> a snapshot
            </label>
          </div>
          {f.source === "snapshot" ? (
            <div class="field">
              <label for="c-from">Snapshot</label>
              <select {...field("from")} onChange={set("from")} data-testid="create-from">
                <option value="">— pick one —</option>
                {(snapshots.data || []).map((s) => (
                  <option value={s.id}>
                    {s.name || s.id.slice(0, 12)} {s.sandbox ? `of ${s.sandbox}` : ""} · {bytes(s.data_bytes)} · {new Date(s.created_at).toLocaleString()}
                  </option>
                ))}
                {f.from && !(snapshots.data || []).some((s) => s.id === f.from) ? <option value={f.from}>{f.from}</option> : null}
              </select>
              <ErrorBox error={snapshots.error} title="Could not list the snapshots" />
              <p class="hint">
                Its files (and volume size) fill the new sandbox. A snapshot with saved memory starts it warm, with the image,
                isolation and network it was taken with.
              </p>
            </div>
          ) : null}
          <div class="field">
            <label for="c-image">{f.source === "snapshot" ? "Image it runs on" : "Image"}</label>
            <input
              {...field("image")}
              list="c-images"
              autocomplete="off"
              placeholder={f.source === "snapshot" ? "the saved memory's, else host" : "host"}
              data-testid="create-image"
            />
            <datalist id="c-images">
              {imageNames.map((n) => (
                <option value={n} />
              ))}
            </datalist>
            <p class="hint">
              A stored image, <code>host</code>, or a registry reference like <code>python:3.12</code> (pulled when missing).
            </p>
            <ErrorBox error={images.error} title="Could not list the images" />
          </div>
        </fieldset>

        <fieldset>
          <legend>Sandbox</legend>
          <div class="grid">
            <div class="field">
              <label for="c-name">Name</label>
              <input {...field("name")} placeholder="generated when empty" autocomplete="off" data-testid="create-name" />
            </div>
            <div class="field">
              <label for="c-count">Count</label>
              <input {...field("count")} type="number" min="1" step="1" inputMode="numeric" />
              <span class="hint">More than one: NAME-1 … NAME-N</span>
            </div>
            <div class="field">
              <label for="c-mode">Mode</label>
              <select {...field("mode")} onChange={set("mode")}>
                <option value="persistent">persistent</option>
                <option value="ephemeral">ephemeral (deleted on stop)</option>
              </select>
            </div>
            <div class="field">
              <label for="c-runtime">Isolation</label>
              <select {...field("runtime")} onChange={set("runtime")}>
                <option value="">the daemon's default</option>
                <option value="ns">namespaces (Linux namespaces)</option>
                <option value="gvisor">gVisor (can hibernate)</option>
              </select>
            </div>
          </div>
        </fieldset>

        <fieldset>
          <legend>Resources</legend>
          <div class="grid">
            <div class="field">
              <label for="c-vcpus">vCPUs</label>
              <input {...field("vcpus")} inputMode="decimal" placeholder="default" />
            </div>
            <div class="field">
              <label for="c-memory">Memory</label>
              <input {...field("memory")} placeholder="like 512M or 2G" />
            </div>
            <div class="field">
              <label for="c-disk">Disk</label>
              <input {...field("disk")} placeholder="like 4G" />
            </div>
            <div class="field">
              <label for="c-pids">Processes (max)</label>
              <input {...field("pids")} inputMode="numeric" placeholder="default" />
            </div>
          </div>
        </fieldset>

        <fieldset>
          <legend>Network</legend>
          <label>
            <input {...check("nat")} /> Outbound network access (NAT); otherwise loopback only
          </label>
          {f.nat ? (
            <div class="grid">
              <div class="field">
                <label for="c-allow_out">Allow out</label>
                <textarea {...field("allow_out")} rows="2" placeholder="pypi.org, *.example.com, 10.1.2.0/24" />
              </div>
              <div class="field">
                <label for="c-deny_out">Deny out</label>
                <textarea {...field("deny_out")} rows="2" placeholder="0.0.0.0/0 denies all not allowed" />
              </div>
            </div>
          ) : null}
          <div class="field">
            <label for="c-networks">Private networks</label>
            <input {...field("networks")} placeholder="names, comma-separated" />
          </div>
        </fieldset>

        <fieldset>
          <legend>Environment</legend>
          <div class="grid">
            <div class="field">
              <label for="c-env">Variables</label>
              <textarea {...field("env")} rows="3" placeholder="KEY=VALUE, one a line" class="mono" />
            </div>
            <div class="field">
              <label for="c-secret_env">Secret variables</label>
              <textarea {...field("secret_env")} rows="3" placeholder="KEY=VALUE: sealed, never shown" class="mono" />
            </div>
          </div>
        </fieldset>

        <fieldset>
          <legend>Policies</legend>
          <p class="hint">Durations like 30s, 10m, 1h30m, 7d. Leave them all empty for the tenant's (or the daemon's) defaults; wake on use by default resumes a sandbox a policy put to sleep.</p>
          <div class="grid">
            {POLICIES.map(([k, label, help]) => (
              <div class="field">
                <label for={`c-${k}`}>{label}</label>
                <input {...field(k)} placeholder="default" title={help} aria-describedby={`c-${k}-help`} />
                <span class="hint" id={`c-${k}-help`}>
                  {help}
                </span>
              </div>
            ))}
            <div class="field">
              <label for="c-ttl_action">When the TTL fires</label>
              <select {...field("ttl_action")} onChange={set("ttl_action")}>
                <option value="">default: stop (ephemeral: delete)</option>
                <option value="pause">pause</option>
                <option value="stop">stop</option>
                <option value="archive">archive</option>
                <option value="delete">delete</option>
              </select>
            </div>
            <div class="field">
              <label for="c-auto_resume">Wake on use</label>
              <select {...field("auto_resume")} onChange={set("auto_resume")}>
                <option value="">default</option>
                <option value="on">on</option>
                <option value="off">off</option>
              </select>
            </div>
          </div>
        </fieldset>

        <details>
          <summary>Advanced: service, volumes, placement, backups, security</summary>
          <fieldset>
            <legend>Service (the image's start command)</legend>
            <label>
              <input {...check("no_service")} /> No service, whatever the image says
            </label>
            {!f.no_service ? (
              <div class="grid">
                <div class="field">
                  <label for="c-entrypoint">Entrypoint</label>
                  <input {...field("entrypoint")} class="mono" placeholder="the image's" />
                </div>
                <div class="field">
                  <label for="c-cmd">Command</label>
                  <input {...field("cmd")} class="mono" placeholder="python3 -m http.server 8000" />
                </div>
                <div class="field">
                  <label for="c-restart">Restart</label>
                  <input {...field("restart")} list="c-restarts" placeholder="no" />
                  <datalist id="c-restarts">
                    <option value="no" />
                    <option value="on-failure" />
                    <option value="on-failure:5" />
                    <option value="always" />
                  </datalist>
                </div>
                <div class="field">
                  <label for="c-stop_signal">Stop signal</label>
                  <input {...field("stop_signal")} placeholder="SIGTERM" />
                </div>
                <div class="field">
                  <label for="c-stop_timeout">Stop timeout</label>
                  <input {...field("stop_timeout")} placeholder="10s" />
                </div>
              </div>
            ) : null}
            {!f.no_service ? (
              <>
                <label>
                  <input {...check("no_healthcheck")} /> No health check, whatever the image says
                </label>
                {!f.no_healthcheck ? (
                  <div class="grid">
                    <div class="field">
                      <label for="c-health_cmd">Health check command</label>
                      <input {...field("health_cmd")} class="mono" placeholder="curl -fs localhost:8000" />
                    </div>
                    <div class="field">
                      <label for="c-health_interval">Interval</label>
                      <input {...field("health_interval")} placeholder="30s" />
                    </div>
                    <div class="field">
                      <label for="c-health_timeout">Timeout</label>
                      <input {...field("health_timeout")} placeholder="30s" />
                    </div>
                    <div class="field">
                      <label for="c-health_start_period">Start period</label>
                      <input {...field("health_start_period")} placeholder="0s" />
                    </div>
                    <div class="field">
                      <label for="c-health_retries">Retries</label>
                      <input {...field("health_retries")} inputMode="numeric" placeholder="3" />
                    </div>
                  </div>
                ) : null}
              </>
            ) : null}
          </fieldset>
          <fieldset>
            <legend>Volumes, labels, placement, backups</legend>
            <div class="grid">
              <div class="field">
                <label for="c-volumes">Named volumes</label>
                <textarea {...field("volumes")} rows="2" class="mono" placeholder="NAME:/path or NAME:/path:ro, one a line" />
              </div>
              <div class="field">
                <label for="c-labels">Labels</label>
                <textarea {...field("labels")} rows="2" class="mono" placeholder="KEY=VALUE, one a line" />
              </div>
              <div class="field">
                <label for="c-node_selector">Node selector (cluster)</label>
                <textarea {...field("node_selector")} rows="2" class="mono" placeholder="KEY=VALUE, one a line" />
              </div>
              <div class="field">
                <label for="c-backup_every">Back up every</label>
                <input {...field("backup_every")} placeholder="like 15m; empty: never" />
              </div>
            </div>
          </fieldset>
          <fieldset>
            <legend>Security</legend>
            <label>
              <input {...check("allow_raw_sockets")} /> Allow raw sockets (CAP_NET_RAW: ping, tcpdump)
            </label>
            <label>
              <input {...check("allow_core_dumps")} /> Allow core dumps
            </label>
          </fieldset>
        </details>

        <ErrorBox error={error} title="Not created" />
        <div class="buttons">
          <button type="submit" class="primary" disabled={busy} data-testid="create-submit">
            {busy ? "Creating…" : Number(f.count) > 1 ? `Create ${f.count} sandboxes` : "Create sandbox"}
          </button>
        </div>
      </form>
    </section>
  );
}
