/**
 * api.js — a small fetch client for the Vidline REST API.
 *
 * Copy this file into your own front end; it has no dependencies.
 *
 *   import { ApiClient, ApiError } from "./api.js";
 *
 *   const api = new ApiClient({
 *     baseUrl: config.apiUrl,                    // from /config.json, never hard-coded
 *     getToken: () => session?.idToken,          // the Cognito IdToken
 *     onUnauthorized: () => showSignIn(),        // any 401 on a signed-in call
 *   });
 *
 *   const { id_token } = await api.post("/auth/login", { email, password }, { auth: false });
 *   const { items, next_cursor } = await api.get("/videos", { query: { limit: 12 } });
 *   await api.delete(`/videos/${encodeURIComponent(id)}`);
 *   await api.delete(path, { token: savedToken });  // with a token saved earlier
 *
 *   try { ... } catch (error) {
 *     if (error instanceof ApiError) show(error.message);  // written for people
 *   }
 *
 * The API answers errors as {"error": {"code", "message", "details"?}} with a
 * 4xx/5xx status; every failure — including "the network is down" — reaches
 * you as an ApiError with `status`, `code`, `message` and `details`.
 * Aborting (options.signal) rejects with the usual DOMException "AbortError".
 */

export class ApiError extends Error {
  /**
   * @param {object} init
   * @param {number} init.status  HTTP status; 0 when no response arrived
   * @param {string} init.code    machine-readable, e.g. "invalid_request", "network_error"
   * @param {string} init.message for people
   * @param {Array}  [init.details] field problems, when the API lists them
   */
  constructor({ status, code, message, details = [] }) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }

  get isUnauthorized() {
    return this.status === 401;
  }

  get isNotFound() {
    return this.status === 404;
  }
}

export class ApiClient {
  /**
   * @param {object} options
   * @param {string} options.baseUrl  e.g. "https://api.example.com" (no trailing slash)
   * @param {() => string | null | undefined} [options.getToken] the IdToken, or nothing when signed out
   * @param {(error: ApiError) => void} [options.onUnauthorized] called once per 401 on an authenticated call
   */
  constructor({ baseUrl, getToken = () => null, onUnauthorized = () => {} }) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.getToken = getToken;
    this.onUnauthorized = onUnauthorized;
  }

  get(path, options) {
    return this.request("GET", path, options);
  }

  post(path, body, options) {
    return this.request("POST", path, { ...options, body });
  }

  delete(path, options) {
    return this.request("DELETE", path, options);
  }

  /**
   * Send one request and return the parsed JSON body (null for 204).
   *
   * @param {string} method
   * @param {string} path             starts with "/", e.g. "/videos"
   * @param {object} [options]
   * @param {object} [options.body]   sent as JSON
   * @param {object} [options.query]  added as ?key=value; null/undefined values are skipped
   * @param {boolean} [options.auth=true] send the bearer token (false for /auth/*)
   * @param {string} [options.token]  send this token rather than getToken()'s, e.g. to
   *   finish a clean-up that began before signing out. A 401 for it does not call
   *   onUnauthorized: it is not the current session's token.
   * @param {AbortSignal} [options.signal]
   */
  async request(method, path, options = {}) {
    const { body, query, auth = true, signal } = options;
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }

    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth) {
      const token = options.token ?? this.getToken();
      if (!token) {
        // No point asking: the API would answer 401. Treat it the same way.
        return this.#unauthorized({
          status: 401,
          code: "unauthorized",
          message: "Your session has expired. Please sign in again.",
        });
      }
      headers.Authorization = `Bearer ${token}`;
    }

    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      // fetch only rejects when no HTTP response arrived: offline, DNS, CORS, refused.
      throw new ApiError({
        status: 0,
        code: "network_error",
        message: "Can’t reach Vidline right now. Check your connection and try again.",
      });
    }

    if (response.status === 204) return null;
    const data = await readJson(response);
    if (response.ok) return data;

    const init = {
      status: response.status,
      code: data?.error?.code ?? `http_${response.status}`,
      message: data?.error?.message ?? `Something went wrong (HTTP ${response.status}). Please try again.`,
      details: data?.error?.details ?? [],
    };
    if (auth && !options.token && response.status === 401) return this.#unauthorized(init);
    throw new ApiError(init);
  }

  #unauthorized(init) {
    const error = new ApiError(init);
    this.onUnauthorized(error);
    throw error;
  }
}

/** The body as JSON, or null when it is empty or not JSON (e.g. a proxy's HTML error page). */
async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
