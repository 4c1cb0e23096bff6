// The console's shell: the session (login by one-time URL or API key), the
// navigation, the tenant an admin acts for, and the page for the path.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./style.css";
import { api, get, post, setCsrf, setActFor, actFor, onUnauthorized } from "./api.js";
import { Link, navigate, useRoute } from "./router.jsx";
import { ErrorBox, Lazy, Loading } from "./ui.jsx";
import SandboxList from "./pages/list.jsx";
import CreateSandbox from "./pages/create.jsx";
import SandboxPage from "./pages/sandbox.jsx";
import Audit from "./pages/audit.jsx";
import Nodes from "./pages/nodes.jsx";
import Sessions from "./pages/sessions.jsx";

const loadUsage = () => import("./pages/usage.jsx");

/**
 * Logs in with the one-time token of a `dwell ui` URL, or an API key. A link
 * is spent only when the user asks: a link someone else made would log this
 * browser in to their tenant, so the page says so first (and says which
 * session this browser has now, if any).
 */
function Login({ onSession }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [token, setToken] = useState(null);
  const [current, setCurrent] = useState(null);
  const login = async (body) => {
    setBusy(true);
    setError(null);
    try {
      const s = await post("/v1/console/sessions", body);
      setToken(null);
      onSession(s);
      navigate("/", { replace: true });
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => {
    // The token travels in the fragment, which browsers never send to a
    // server or put in a Referer.
    const m = location.hash.match(/token=([A-Za-z0-9_-]+)/);
    if (m) {
      history.replaceState(null, "", location.pathname);
      setToken(m[1]);
      get("/v1/console/session").then(setCurrent, () => setCurrent(null));
    }
  }, []);
  if (token)
    return (
      <main class="login" id="main">
        <h1>dwell</h1>
        <p>
          This one-time link logs this browser in to the dwell console, as the tenant whose key made it with{" "}
          <code>dwell ui</code>. Use only a link you made yourself.
        </p>
        {current ? (
          <p class="hint" data-testid="current-session">
            This browser is logged in as tenant <strong>{current.tenant}</strong> now; the link replaces that session.
          </p>
        ) : null}
        <button class="primary" onClick={() => login({ token })} disabled={busy} data-testid="link-login" autofocus>
          {busy ? "Logging in…" : "Log in with this link"}
        </button>{" "}
        <button onClick={() => (current ? navigate("/", { replace: true }) || location.reload() : setToken(null))}>
          Cancel
        </button>
        <ErrorBox error={error} title="Login refused" />
      </main>
    );
  return (
    <main class="login" id="main">
      <h1>dwell</h1>
      <form
        data-testid="login-form"
        onSubmit={(e) => {
          e.preventDefault();
          login({ api_key: key.trim() });
        }}
      >
        <label for="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autocomplete="off"
          value={key}
          onInput={(e) => setKey(e.currentTarget.value)}
          required
        />
        <button class="primary" type="submit" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
      </form>
      <ErrorBox error={error} title="Login refused" />
      <p class="hint">
        Or run <code>dwell ui</code> on the daemon's host for a one-time login URL.
      </p>
    </main>
  );
}

/** An admin picks the tenant the console acts for. */
function TenantPicker({ session }) {
  const [tenants, setTenants] = useState([]);
  useEffect(() => {
    // The admin's own list, also while it acts for a tenant.
    get("/v1/tenants", undefined, { asSelf: true }).then(
      (t) => setTenants(t || []),
      () => setTenants([])
    );
  }, []);
  const onChange = (e) => {
    const t = e.currentTarget.value;
    setActFor(t === session.tenant ? null : t);
    sessionStorage.setItem("dwell-act-for", t);
    navigate("/");
    location.reload();
  };
  const names = Array.from(new Set([session.tenant, ...tenants.map((t) => t.name)]));
  return (
    <label class="tenant">
      Tenant{" "}
      <select value={actFor() || session.tenant} onChange={onChange} data-testid="tenant-picker">
        {names.map((n) => (
          <option value={n}>{n}</option>
        ))}
      </select>
    </label>
  );
}

function Nav({ session, onLogout }) {
  const path = useRoute();
  const item = (href, label) => (
    <li>
      <Link href={href} aria-current={path === href || (href !== "/" && path.startsWith(href)) ? "page" : undefined}>
        {label}
      </Link>
    </li>
  );
  return (
    <header class="top">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <Link href="/" class="brand">
        dwell
      </Link>
      <nav aria-label="Console">
        <ul>
          {item("/", "Sandboxes")}
          {item("/create", "Create")}
          {item("/usage", "Usage")}
          {item("/audit", "Audit")}
          {session.admin && !actFor() ? item("/nodes", "Nodes") : null}
          {item("/sessions", "Sessions")}
        </ul>
      </nav>
      <div class="who">
        {session.admin ? <TenantPicker session={session} /> : <span data-testid="tenant">{session.tenant}</span>}
        <button onClick={onLogout} data-testid="logout">
          Log out
        </button>
      </div>
    </header>
  );
}

function Page({ session }) {
  const path = useRoute();
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  let page;
  if (parts.length === 0) page = <SandboxList session={session} />;
  else if (parts[0] === "create") page = <CreateSandbox session={session} />;
  else if (parts[0] === "sandboxes" && parts[1]) page = <SandboxPage id={parts[1]} tab={parts[2] || "overview"} session={session} />;
  else if (parts[0] === "usage") page = <Lazy load={loadUsage} session={session} />;
  else if (parts[0] === "audit") page = <Audit session={session} />;
  else if (parts[0] === "nodes") page = <Nodes session={session} />;
  else if (parts[0] === "sessions") page = <Sessions session={session} />;
  else
    page = (
      <div class="empty">
        No page at <code>/ui{path}</code>. <Link href="/">Back to the sandboxes</Link>
      </div>
    );
  return <main id="main">{page}</main>;
}

function App() {
  const [session, setSession] = useState(undefined);
  const [error, setError] = useState(null);
  const path = useRoute();
  const accept = (s) => {
    setCsrf(s.csrf_token);
    const t = sessionStorage.getItem("dwell-act-for");
    setActFor(s.admin && t && t !== s.tenant ? t : null);
    setSession(s);
  };
  useEffect(() => {
    onUnauthorized(() => setSession(null));
    if (path === "/login") {
      setSession(null);
      return;
    }
    get("/v1/console/session").then(accept, (e) => {
      if (e.status === 401) setSession(null);
      else setError(e);
    });
  }, []);
  const logout = async () => {
    try {
      await api("DELETE", "/v1/console/session");
    } catch (_) {
      /* gone already */
    }
    sessionStorage.removeItem("dwell-act-for");
    setSession(null);
    navigate("/login", { replace: true });
  };
  if (error) return <ErrorBox error={error} title="The console cannot reach the daemon" />;
  if (session === undefined) return <Loading what="the console" />;
  if (session === null) return <Login onSession={accept} />;
  return (
    <>
      <Nav session={session} onLogout={logout} />
      <Page session={session} />
    </>
  );
}

render(<App />, document.getElementById("app"));
