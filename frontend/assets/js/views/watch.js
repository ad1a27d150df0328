/**
 * Watch a video: the player as soon as it is playable (its stream can play
 * while it is still processing), its progress or the reason it failed
 * otherwise, its details, and Delete.
 */

import { formatDateTime, formatDuration, formatMegabytes } from "../format.js";
import { createPlayer } from "../player.js";
import { followVideo } from "../poller.js";
import { isFinal, renderBadge } from "../status.js";
import { announce, childController, confirmDialog, h, icon } from "../ui.js";
import { canWatch, placeholder } from "./card.js";

/**
 * @param {HTMLElement} root
 * @param {{api, signal: AbortSignal, navigate: (url: string) => void}} ctx
 * @param {string} id
 * @returns {Promise<void>} settles once the first state is on screen
 */
export async function mountWatch(root, ctx, id) {
  const { api, signal } = ctx;
  const back = h("a", { class: "back-link", href: "/" }, icon("back"), "Back to library");
  const loading = h("div", { class: "player player-loading" }, h("span", { class: "spinner" }));
  const body = h("div", { class: "watch", "aria-busy": "true" }, loading);
  root.replaceChildren(h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, back), body);
  document.title = "Video · Vidline";

  let video;
  try {
    video = await api.get(`/videos/${encodeURIComponent(id)}`, { signal });
  } catch (error) {
    if (signal.aborted || error.isUnauthorized) return;
    body.setAttribute("aria-busy", "false");
    body.replaceChildren(
      error.isNotFound
        ? stateBox("film", "Video not found", "It may have been deleted, or it belongs to another account.")
        : stateBox("alert", "We couldn’t load this video", error.message, true),
    );
    return;
  }

  // The stage (player or progress) and the details are updated separately:
  // a playing video must never be re-created or moved, or it would stop.
  const stage = createStage(signal);
  let details = h("aside");
  let deleting = false; // a DELETE is on its way: the button stays disabled through re-renders
  body.setAttribute("aria-busy", "false");
  body.replaceChildren(stage.element, details);
  render(video);
  if (!isFinal(video.status)) {
    followVideo(api, video, {
      signal,
      onChange(next, previous) {
        render(next);
        if (next.status === "ready") announce(`“${next.title}” is ready`);
        else if (canWatch(next) && !canWatch(previous)) announce(`“${next.title}” can be watched now`);
        if (next.status === "failed") announce(`“${next.title}” failed: ${next.error ?? "it could not be processed"}`);
      },
      onGone: () => ctx.navigate("/"),
    });
  }

  function render(current) {
    video = current;
    document.title = `${current.title} · Vidline`;
    stage.update(current);
    // Re-rendering replaces the heading and Delete button: keep focus where it was.
    const focusKey = details.contains(document.activeElement) ? document.activeElement.dataset.focusKey : undefined;
    const next = renderDetails(current, onDelete, deleting);
    details.replaceWith(next);
    details = next;
    if (focusKey) details.querySelector(`[data-focus-key="${focusKey}"]`)?.focus();
  }

  async function onDelete() {
    if (deleting) return;
    const title = video.title;
    const confirmed = await confirmDialog({
      title: "Delete video",
      message: `Delete “${title}”? This cannot be undone.`,
      confirmLabel: "Delete",
      cancelLabel: "Keep",
      danger: true,
      signal, // Back while it is open closes it
    });
    if (!confirmed || signal.aborted || deleting) return;
    deleting = true;
    render(video);
    // The player stops first: its files are about to go, and every request
    // it made for them meanwhile would fail.
    stage.hold();
    try {
      await api.delete(`/videos/${encodeURIComponent(video.id)}`, { signal });
    } catch (error) {
      if (signal.aborted || error.isUnauthorized) return;
      // A 404 means it is already gone, which is what was asked for.
      if (!error.isNotFound) {
        deleting = false;
        stage.release();
        render(video); // the player again, and Delete enabled
        announce(`Couldn’t delete “${title}”: ${error.message}`);
        return;
      }
    }
    ctx.navigate("/");
    announce(`Deleted “${title}”`);
  }
}

/**
 * The player once the video can be watched, or what stands in for it: its
 * progress, or why it failed. While a playable video is still processing, a
 * note under the player says so, with the progress; the player itself is
 * made once and kept (update() only passes it the latest state).
 */
function createStage(signal) {
  const element = h("div", { class: "watch-stage" });
  let player = null;
  let playerController = null;
  const progress = h("progress", { class: "progress", max: 100 });
  const noteText = h("span", { class: "stream-note-text" });
  const note = h(
    "div",
    { class: "stream-note" },
    h("p", {}, icon("clock"), noteText),
    progress,
    h("p", { class: "stream-note-hint" }, "You can watch already: the rest of the video arrives as it is encoded."),
  );

  let held = false;

  function update(current) {
    if (held) return;
    if (canWatch(current)) {
      if (!player) {
        playerController = childController(signal);
        player = createPlayer(current, { signal: playerController.signal });
        element.replaceChildren(h("div", { class: "player" }, player.element, player.note), note);
      } else {
        player.update(current);
      }
      const processing = current.status !== "ready";
      note.hidden = !processing;
      element.dataset.stream = processing ? "processing" : "ready";
      noteText.textContent = processing ? `Still processing — ${Math.round(current.progress ?? 0)}%` : "";
      progress.value = current.progress ?? 0;
      progress.setAttribute("aria-label", `Progress of “${current.title}”`);
      return;
    }
    // Not (or no longer) watchable, e.g. a failed attempt took its stream back.
    stopPlayer();
    element.replaceChildren(renderWaiting(current));
  }

  function stopPlayer() {
    playerController?.abort();
    player = playerController = null;
    delete element.dataset.stream;
  }

  /** Stop the player and show a spinner, whatever update() is told, until release() and the next update(). */
  function hold() {
    held = true;
    stopPlayer();
    element.replaceChildren(h("div", { class: "player player-loading" }, h("span", { class: "spinner" })));
  }

  function release() {
    held = false;
  }

  return { element, update, hold, release };
}

/** What stands in for the player while the video can't be watched. */
function renderWaiting(video) {
  const overlay =
    video.status === "failed"
      ? h(
          "div",
          { class: "player-overlay" },
          h("p", { class: "player-overlay-title" }, "This video couldn’t be processed"),
          h("p", { class: "player-overlay-text" }, video.error || "Something went wrong while encoding it."),
        )
      : h(
          "div",
          { class: "player-overlay" },
          h(
            "p",
            { class: "player-overlay-title" },
            video.status === "awaiting_upload" ? "Waiting for the upload" : "Getting your video ready…",
          ),
          h("progress", {
            class: "progress",
            max: 100,
            value: video.status === "processing" ? (video.progress ?? 0) : null,
            "aria-label": `Progress of “${video.title}”`,
          }),
          h("p", { class: "player-overlay-text" }, "This page updates by itself. We’ll also email you when it’s ready."),
        );
  return h("div", { class: `player player-${video.status}` }, placeholder(video), overlay);
}

function renderDetails(video, onDelete, deleting) {
  const source = video.source ?? {};
  const rows = [
    ["Duration", formatDuration(source.duration_s)],
    ["Source resolution", source.width && source.height ? `${source.width} × ${source.height}` : ""],
    ["Size", formatMegabytes(source.size_bytes)],
    ["File", source.filename ?? ""],
    ["Uploaded", formatDateTime(video.created_at)],
  ].filter(([, value]) => value);

  const deleteButton = h("button", { type: "button", class: "btn btn-danger", dataset: { focusKey: "delete" } }, icon("trash"), "Delete");
  deleteButton.disabled = deleting;
  deleteButton.addEventListener("click", () => onDelete());

  return h(
    "aside",
    { class: "details panel", dataset: { videoId: video.id, status: video.status } },
    h("h1", { class: "details-title", tabindex: "-1", dataset: { focusKey: "heading" } }, video.title),
    h("p", {}, renderBadge(h("span"), video)),
    h("dl", { class: "facts" }, rows.map(([term, value]) => h("div", { class: "fact" }, h("dt", {}, term), h("dd", {}, value)))),
    h("div", { class: "details-actions" }, deleteButton),
  );
}

function stateBox(iconName, title, text, retry = false) {
  return h(
    "div",
    { class: "state" },
    h("span", { class: "state-icon" }, icon(iconName)),
    h("h1", { class: "state-title", tabindex: "-1" }, title),
    h("p", { class: "state-text" }, text),
    retry ? h("button", { type: "button", class: "btn btn-secondary", onClick: () => location.reload() }, "Try again") : null,
  );
}
