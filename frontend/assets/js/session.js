/**
 * The signed-in session: Cognito tokens kept in sessionStorage.
 *
 * sessionStorage lives as long as the tab, so a reload keeps you signed in
 * but the tokens do not leak into other tabs or survive closing the browser.
 * The IdToken's own `exp` claim decides when the session ends; the API is
 * the final judge (any 401 also ends it — see main.js).
 */

const STORAGE_KEY = "vidline.session";
// Treat a token as expired a little early so a request is not sent with a
// token that dies on the way.
const EXPIRY_MARGIN_MS = 10_000;

/**
 * Decode a JWT's payload (the middle, base64url-encoded part). This only
 * reads the claims; verifying the signature is the API's job.
 * @returns {object | null}
 */
export function decodeJwtPayload(token) {
  try {
    const part = token.split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/**
 * Store the tokens from POST /auth/login and return the session.
 * @param {{id_token: string, access_token: string, refresh_token: string, expires_in: number}} tokens
 * @param {string} email what the person typed, used when the token has no email claim
 */
export function startSession(tokens, email) {
  const claims = decodeJwtPayload(tokens.id_token) ?? {};
  const expiresAt = claims.exp
    ? claims.exp * 1000
    : Date.now() + (Number(tokens.expires_in) || 3600) * 1000;
  const session = {
    idToken: tokens.id_token,
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    email: claims.email ?? email,
    expiresAt,
  };
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  return session;
}

/** The stored session, or null when there is none or it has expired. */
export function currentSession() {
  let session;
  try {
    session = JSON.parse(sessionStorage.getItem(STORAGE_KEY));
  } catch {
    return null;
  }
  if (!session?.idToken) return null;
  return msUntilExpiry(session) > 0 ? session : null;
}

/** True when a session was stored but its token has expired. */
export function hasExpiredSession() {
  return sessionStorage.getItem(STORAGE_KEY) !== null && currentSession() === null;
}

/** Milliseconds until the session ends, read from the IdToken's own `exp`. */
export function msUntilExpiry(session) {
  const exp = decodeJwtPayload(session.idToken)?.exp;
  const expiresAt = exp ? exp * 1000 : session.expiresAt;
  return expiresAt - EXPIRY_MARGIN_MS - Date.now();
}

export function endSession() {
  sessionStorage.removeItem(STORAGE_KEY);
}
