/**
 * The library: the upload panel and your videos, newest first, 12 at a
 * time with "Load more". Cards of videos still on their way follow their
 * progress (poller.js) and announce when they are ready or failed.
 */

import { followVideo } from "../poller.js";
import { isFinal } from "../status.js";
import { announce, childController, h, icon } from "../ui.js";
import { canWatch, createCard, refreshCardTime, updateCard } from "./card.js";
import { createUploader } from "./uploader.js";

const PAGE_SIZE = 12;

/**
 * @param {HTMLElement} root
 * @param {{api, config, queue, signal: AbortSignal}} ctx
 */
export function mountLibrary(root, ctx) {
  const { api, queue, signal } = ctx;
  document.title = "Your videos · Vidline";

  const uploader = createUploader(ctx);
  const grid = h("ul", { class: "grid", "aria-label": "Your videos", "aria-busy": "true" });
  const loadMore = h("button", { type: "button", class: "btn btn-secondary", hidden: true }, "Load more");
  const status = h("div", { class: "library-status" });

  root.replaceChildren(
    h(
      "div",
      { class: "page-head" },
      h(
        "div",
        {},
        h("h1", { tabindex: "-1" }, "Your videos"),
        h("p", { class: "lede" }, "Upload a video and we’ll encode it for the web. You’ll get an email when it’s ready."),
      ),
    ),
    uploader.element,
    h("section", { class: "library", "aria-label": "Library" }, status, grid, h("div", { class: "load-more" }, loadMore)),
  );

  /** id → {card, controller}: the controller stops the card's polling. */
  const cards = new Map();
  let cursor = null;

  function addCard(video, { prepend = false } = {}) {
    if (cards.has(video.id)) return;
    const card = createCard(video);
    const item = h("li", {}, card);
    if (prepend) grid.prepend(item);
    else grid.append(item);
    const controller = childController(signal);
    cards.set(video.id, { card, controller });
    if (!isFinal(video.status)) follow(video, card, controller.signal);
    showEmptyState(false);
  }

  function removeCard(id) {
    const entry = cards.get(id);
    if (!entry) return;
    entry.controller.abort();
    entry.card.closest("li").remove();
    cards.delete(id);
    if (cards.size === 0) showEmptyState(true);
  }

  function follow(video, card, cardSignal) {
    followVideo(api, video, {
      signal: cardSignal,
      onChange(next, previous) {
        // Right after an upload the API may still say awaiting_upload for a
        // moment; the card already (correctly) says queued.
        if (next.status === "awaiting_upload" && card.dataset.status === "queued") return;
        updateCard(card, next);
        if (next.status === "ready") announce(`“${next.title}” is ready`);
        else if (canWatch(next) && !canWatch(previous)) announce(`“${next.title}” can be watched now`);
        if (next.status === "failed") announce(`“${next.title}” failed: ${next.error ?? "it could not be processed"}`);
      },
      onGone: () => removeCard(video.id),
    });
  }

  function showEmptyState(on) {
    if (!on) {
      if (status.dataset.kind === "empty") status.replaceChildren();
      delete status.dataset.kind;
      return;
    }
    status.dataset.kind = "empty";
    status.replaceChildren(
      h(
        "div",
        { class: "state" },
        h("span", { class: "state-icon" }, icon("film")),
        h("p", { class: "state-title" }, "No videos yet — drop one here to get started"),
        h("p", { class: "state-text" }, "Or use “Choose video” above. Each one is encoded for the web and you get an email when it’s ready."),
      ),
    );
  }

  function showError(error, retry) {
    status.dataset.kind = "error";
    status.replaceChildren(
      h(
        "div",
        { class: "state state-error" },
        h("span", { class: "state-icon" }, icon("alert")),
        h("p", { class: "state-title" }, "We couldn’t load your videos"),
        h("p", { class: "state-text", role: "alert" }, error.message),
        h("button", { type: "button", class: "btn btn-secondary", onClick: retry }, "Try again"),
      ),
    );
  }

  async function loadPage() {
    loadMore.disabled = true;
    grid.setAttribute("aria-busy", "true");
    if (cards.size === 0) status.replaceChildren(skeletons());
    try {
      const page = await api.get("/videos", { query: { limit: PAGE_SIZE, cursor }, signal });
      status.replaceChildren();
      delete status.dataset.kind;
      page.items.forEach((video) => addCard(video));
      cursor = page.next_cursor ?? null;
      loadMore.hidden = !cursor;
      if (cards.size === 0) showEmptyState(true);
    } catch (error) {
      if (signal.aborted || error.isUnauthorized) return;
      if (cards.size === 0) showError(error, loadPage);
      else announce(`Couldn’t load more videos: ${error.message}`);
    } finally {
      loadMore.disabled = false;
      grid.setAttribute("aria-busy", "false");
    }
  }

  loadMore.addEventListener("click", async () => {
    const before = cards.size;
    await loadPage();
    // Keep keyboard users in place: focus the first newly loaded card's link.
    if (cards.size > before) grid.children[before]?.querySelector("a")?.focus();
  });

  // A finished upload appears at the top at once.
  queue.addEventListener(
    "uploaded",
    ({ detail }) => {
      // A card may show it already (say, as failed while a slow upload was still on its way): start over.
      removeCard(detail.video.id);
      addCard(detail.video, { prepend: true });
    },
    { signal },
  );

  const clock = setInterval(() => cards.forEach(({ card }) => refreshCardTime(card)), 60_000);
  signal.addEventListener("abort", () => clearInterval(clock), { once: true });

  loadPage();
}

/** Grey placeholder cards while the first page loads. */
function skeletons() {
  const card = () =>
    h(
      "li",
      {},
      h(
        "div",
        { class: "card card-skeleton" },
        h("div", { class: "thumb" }),
        h("div", { class: "card-body" }, h("span", { class: "skeleton-line" }), h("span", { class: "skeleton-line short" })),
      ),
    );
  return h("ul", { class: "grid", "aria-hidden": "true" }, Array.from({ length: 4 }, card));
}
