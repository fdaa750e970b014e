// The REST API under /api/v1, with the bearer token when one is set.
// The token lives in this tab's sessionStorage. It is taken from the URL fragment
// (#token=…), which browsers never send to a server, and removed from the address bar at once.

const TOKEN_KEY = "jsoc-bulk-token";
const PREFIX = "/api/v1";

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Take "token=…" out of the fragment ("#token=X" or "#/jobs/ID&token=X"); keep the route. */
export function takeTokenFromFragment() {
  const parts = location.hash.replace(/^#/, "").split("&");
  const found = parts.find((p) => p.startsWith("token="));
  if (found === undefined) return;
  setToken(decodeURIComponent(found.slice("token=".length)));
  const route = parts.filter((p) => p !== found).join("&") || "/";
  history.replaceState(null, "", `${location.pathname}${location.search}#${route}`);
}

/** One JSON request; rejects with ApiError (status, problem title and detail). */
export async function api(path, { method = "GET" } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(PREFIX + path, { method, headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "Server unreachable", String(err.message || err));
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, data?.title ?? resp.statusText, data?.detail ?? "");
  }
  return data;
}
