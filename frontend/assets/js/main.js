/**
 * Vidline's front end: boot and routing.
 *
 * Routes live in the query string so one index.html serves them all:
 *   /              your library (or sign-in)
 *   /?video=<id>   watch one video (emails link here; sign-in comes first)
 *
 * Each view is mounted with an AbortSignal that ends its requests, polling
 * and listeners when the next view replaces it.
 */

import { ApiClient } from "./api.js";
import { ConfigError, loadConfig } from "./config.js";
import { UploadQueue } from "./queue.js";
import { currentSession, endSession, hasExpiredSession, msUntilExpiry, startSession } from "./session.js";
import { announce, confirmDialog, focusHeading, h, icon } from "./ui.js";
import { mountUsage, trackUsage } from "./usage.js";
import { mountAuth } from "./views/auth.js";
import { mountLibrary } from "./views/library.js";
import { mountWatch } from "./views/watch.js";

const EXPIRED_MESSAGE = "Your session has expired. Please sign in again.";

const app = {
  config: null,
  api: null,
  queue: null,
  usageTracker: null, // trackUsage(api): answers that change the usage panel's figures
  view: null, // the current view's AbortController
  expiryTimer: 0,
  signedIn: false,
  // Whose uploads the queue holds: uploads that outlived an expired session
  // must not carry over to someone else signing in on this tab.
  queueOwner: null,
};

const viewRoot = document.getElementById("view");

boot();

async function boot() {
  try {
    app.config = await loadConfig();
  } catch (error) {
    renderConfigError(error);
    return;
  }

  app.api = new ApiClient({
    baseUrl: app.config.apiUrl,
    getToken: () => currentSession()?.idToken,
    onUnauthorized: () => expireSession(),
  });
  app.usageTracker = trackUsage(app.api);
  // Unfinished uploads are remembered per account: only their owner is offered to resume one.
  app.queue = new UploadQueue({ api: app.api, config: app.config, getOwner: () => currentSession()?.email });
  // Uploads carry on while you watch a video, so their news is announced
  // here rather than by the upload panel.
  app.queue.addEventListener("uploaded", () => announce("Upload complete"));
  app.queue.addEventListener("cancelled", () => announce("Upload cancelled"));
  app.queue.addEventListener("failed", ({ detail }) => announce(`Upload failed: ${detail.error.message}`));

  if (app.config.stage && app.config.stage !== "prod") {
    const stage = document.getElementById("stage");
    stage.textContent = app.config.stage;
    stage.hidden = false;
  }

  document.getElementById("sign-out").addEventListener("click", signOut);
  document.addEventListener("click", followInternalLink);
  window.addEventListener("popstate", () => render({ focus: true }));
  // A file dropped where nothing takes it (the library's upload panel takes
  // drops) must not make the browser navigate away to it.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if (event.dataTransfer?.types?.includes("Files")) event.preventDefault();
    });
  }
  window.addEventListener("beforeunload", (event) => {
    if (app.queue.busy) event.preventDefault(); // the browser asks "Leave site?"
  });

  const notice = hasExpiredSession() ? EXPIRED_MESSAGE : "";
  if (notice) endSession();
  render({ notice });
}

/** Where the URL points: {name: "library"} or {name: "watch", id}. */
function currentRoute() {
  const id = new URLSearchParams(location.search).get("video");
  return id ? { name: "watch", id } : { name: "library" };
}

/** Go to an in-app URL ("/", "/?video=…") without reloading. */
function navigate(url) {
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
  render({ focus: true });
}

function render({ focus = false, notice = "" } = {}) {
  app.view?.abort();
  app.view = new AbortController();
  const { signal } = app.view;
  const session = currentSession();
  app.signedIn = Boolean(session);
  showAccount(session);
  scheduleExpiry(session);

  if (!session) {
    mountAuth(viewRoot, {
      api: app.api,
      config: app.config,
      notice,
      onSignedIn: (tokens, email) => {
        const session = startSession(tokens, email);
        if (app.queueOwner !== session.email) app.queue.clear();
        app.queueOwner = session.email;
        // Stay on the same URL: a /?video=… link opens once signed in.
        render({ focus: true });
      },
    });
    return;
  }

  const ctx = { api: app.api, config: app.config, queue: app.queue, signal, navigate };
  const route = currentRoute();
  const mounted = route.name === "watch" ? mountWatch(viewRoot, ctx, route.id) : mountLibrary(viewRoot, ctx);
  if (route.name === "library") mountUsage(viewRoot, { ...ctx, tracker: app.usageTracker });
  // After sign-in and navigation, focus the new page's heading so screen
  // readers announce where they are. The watch view's heading appears once
  // the video has loaded.
  Promise.resolve(mounted).then(() => {
    if (focus && !signal.aborted) focusHeading(viewRoot);
  });
}

/** Links to "/…" are app routes: handle them here instead of reloading. */
function followInternalLink(event) {
  const link = event.target.closest("a[href]");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || link.target) return;
  const url = new URL(link.href);
  if (url.origin !== location.origin || url.pathname !== "/") return;
  event.preventDefault();
  navigate(url.pathname + url.search);
  window.scrollTo(0, 0);
}

function showAccount(session) {
  document.getElementById("account").hidden = !session;
  document.getElementById("account-email").textContent = session?.email ?? "";
}

/** End the session when the IdToken expires, even if the tab sits idle. */
function scheduleExpiry(session) {
  clearTimeout(app.expiryTimer);
  if (!session) return;
  // setTimeout's limit is about 24.8 days; tokens live an hour.
  const delay = Math.min(msUntilExpiry(session), 2 ** 31 - 1);
  app.expiryTimer = setTimeout(expireSession, Math.max(delay, 0));
}

/** The API said 401, or the token ran out: back to sign-in, same URL. */
function expireSession() {
  // Several requests can fail at once; the first one ends the session.
  if (!app.signedIn) return;
  // Files already going to S3 finish (that needs no token); the rest wait for nobody.
  app.queue.clear({ keepSending: true });
  endSession();
  render({ notice: EXPIRED_MESSAGE });
}

async function signOut() {
  if (app.queue.busy) {
    const confirmed = await confirmDialog({
      title: "Sign out?",
      message: "Uploads in progress will be cancelled.",
      confirmLabel: "Sign out",
      cancelLabel: "Keep uploading",
      signal: app.view.signal, // closes if the session ends meanwhile
    });
    if (!confirmed || !app.signedIn) return;
  }
  // Cancelled uploads delete their videos with the token they started with.
  app.queue.clear();
  endSession();
  history.pushState(null, "", "/");
  render();
  announce("Signed out");
}

function renderConfigError(error) {
  if (!(error instanceof ConfigError)) console.error(error);
  document.title = "Vidline is unavailable";
  viewRoot.replaceChildren(
    h(
      "div",
      { class: "state state-error state-page" },
      h("span", { class: "state-icon" }, icon("alert")),
      h("h1", { class: "state-title" }, "Vidline can’t start right now"),
      h("p", { class: "state-text" }, "We couldn’t load the app’s settings. This is usually brief — please try again in a moment."),
      h("p", { class: "state-detail" }, error.message),
      h("button", { type: "button", class: "btn btn-primary", onClick: () => location.reload() }, "Try again"),
    ),
  );
}
