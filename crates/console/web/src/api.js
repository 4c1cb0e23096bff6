// The console's only way to the daemon: the public REST API (the same
// routes and JSON as the CLI and SDKs), authenticated by the session cookie.
// Every state-changing call carries the session's CSRF token; an admin
// acting for a tenant names it in X-Dwell-Tenant, as `dwell --as-tenant` does.

/** An error answer of the API: `{error: {code, message}}` and its status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const state = { csrf: null, actFor: null, onUnauthorized: null };

/** The session's CSRF token (from `GET /v1/console/session`). */
export function setCsrf(token) {
  state.csrf = token;
}

/** The tenant an admin acts for, or null for the admin's own. */
export function setActFor(tenant) {
  state.actFor = tenant || null;
}
export function actFor() {
  return state.actFor;
}

/** Called when the daemon says the session is gone (expired, revoked). */
export function onUnauthorized(f) {
  state.onUnauthorized = f;
}

function url(path, query) {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** Headers every request carries (`asSelf`: an admin's own, not acting
 * for the tenant it picked). */
export function headers(method, extra = {}, asSelf = false) {
  const h = { ...extra };
  if (method !== "GET" && method !== "HEAD" && state.csrf) h["X-Dwell-CSRF"] = state.csrf;
  if (state.actFor && !asSelf) h["X-Dwell-Tenant"] = state.actFor;
  return h;
}

/**
 * Calls the API. `body` is sent as JSON unless it is a Blob/File/ArrayBuffer
 * (sent as is); the answer is parsed as JSON unless `raw` (then the Response);
 * `asSelf` leaves out the tenant an admin acts for.
 */
export async function api(method, path, { body, query, raw, signal, asSelf } = {}) {
  const extra = {};
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    extra["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    extra["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(url(path, query), {
      method,
      body: payload,
      headers: headers(method, extra, asSelf),
      credentials: "same-origin",
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", `cannot reach the daemon: ${e.message}`);
  }
  if (!res.ok) {
    let code = "error";
    let message = `${res.status} ${res.statusText}`;
    try {
      const j = await res.json();
      if (j && j.error) {
        code = j.error.code || code;
        message = j.error.message || message;
      }
    } catch (_) {
      /* not JSON */
    }
    if (res.status === 401 && state.onUnauthorized) state.onUnauthorized(message);
    throw new ApiError(res.status, code, message);
  }
  if (raw) return res;
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, query, opts) => api("GET", path, { ...opts, query });
export const post = (path, body, opts) => api("POST", path, { ...opts, body });
export const patch = (path, body, opts) => api("PATCH", path, { ...opts, body });
export const del = (path, query, opts) => api("DELETE", path, { ...opts, query });

/** A WebSocket URL of the same origin for an API path. */
export function wsUrl(path, query) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = { ...(query || {}) };
  if (state.actFor) q.as_tenant = state.actFor; // browsers set no headers on a WebSocket
  return `${proto}//${location.host}${url(path, q)}`;
}
