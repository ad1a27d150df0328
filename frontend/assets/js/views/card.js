/**
 * A video card in the library grid:
 *
 *   <article class="card" data-video-id="…" data-status="processing" data-playable="true">
 *
 * The title is the card's link (to /?video=ID); CSS stretches it over the
 * whole card so everything is clickable while the link's accessible name
 * stays just the title. A video that can be watched while it is still
 * processing also shows a "Watch now" link on its thumbnail, beside its
 * progress.
 */

import { formatDateTime, formatDuration, formatRelative } from "../format.js";
import { isFinal, renderBadge } from "../status.js";
import { h, icon } from "../ui.js";

export function watchUrl(id) {
  return `/?video=${encodeURIComponent(id)}`;
}

/**
 * Whether the video can be played now: its HLS stream once it is playable
 * (possibly before it is ready), or the MP4 of a ready video (videos from
 * before streaming have only that).
 */
export function canWatch(video) {
  const outputs = video.outputs;
  if (!outputs || video.status === "failed") return false;
  if (outputs.hls_url && (video.playable || video.status === "ready")) return true;
  return video.status === "ready" && Boolean(outputs.renditions?.[0]?.url);
}

/** Build a card for `video`; keep it current with updateCard(). */
export function createCard(video) {
  const card = h("article", { class: "card", dataset: { videoId: video.id } });
  card.append(
    h("div", { class: "thumb" }),
    h(
      "div",
      { class: "card-body" },
      h("h3", { class: "card-title" }, h("a", { class: "card-link", href: watchUrl(video.id) })),
      h(
        "div",
        { class: "card-meta" },
        h("span", { class: "badge" }),
        h("time", { class: "card-time" }),
      ),
      h("progress", { class: "progress card-progress", max: 100 }),
      h("p", { class: "card-error" }),
    ),
  );
  updateCard(card, video);
  return card;
}

/** Bring a card up to date with the latest state of its video. */
export function updateCard(card, video) {
  card.dataset.status = video.status;
  card.dataset.playable = String(canWatch(video));
  card.querySelector(".card-link").textContent = video.title;
  renderBadge(card.querySelector(".badge"), video);

  const time = card.querySelector(".card-time");
  time.dateTime = video.created_at;
  time.title = formatDateTime(video.created_at);
  time.textContent = formatRelative(video.created_at);

  const progress = card.querySelector(".card-progress");
  progress.hidden = isFinal(video.status);
  progress.setAttribute("aria-label", `Progress of “${video.title}”`);
  if (video.status === "processing") progress.value = video.progress ?? 0;
  else progress.removeAttribute("value"); // indeterminate while queued

  const error = card.querySelector(".card-error");
  error.hidden = video.status !== "failed";
  error.textContent = video.status === "failed" ? video.error || "This video could not be processed." : "";

  renderThumb(card.querySelector(".thumb"), video);
}

/** Refresh the "5 minutes ago" texts. */
export function refreshCardTime(card) {
  const time = card.querySelector(".card-time");
  if (time?.dateTime) time.textContent = formatRelative(time.dateTime);
}

function renderThumb(thumb, video) {
  const url = video.outputs?.thumbnail_url;
  const duration = formatDuration(video.source?.duration_s);
  const current = thumb.querySelector("img");
  const early = canWatch(video) && video.status !== "ready"; // playable while processing
  // Don't rebuild while the URL is unchanged: that would flash the image.
  if (url && current?.dataset.src === url && thumb.dataset.status === video.status && thumb.dataset.early === String(early)) {
    return;
  }
  thumb.dataset.status = video.status;
  thumb.dataset.early = String(early);

  const children = [];
  if (url) {
    const img = h("img", {
      alt: `Thumbnail of “${video.title}”`,
      loading: "lazy",
      decoding: "async",
      src: url,
      dataset: { src: url },
    });
    // A broken thumbnail becomes the placeholder; no broken-image icon.
    img.addEventListener("error", () => img.replaceWith(placeholder(video)), { once: true });
    children.push(img);
  } else {
    children.push(placeholder(video));
  }
  if (duration) children.push(h("span", { class: "duration" }, duration));
  if (early) {
    // Above the card's stretched link; its name says which video it plays.
    children.push(
      h(
        "a",
        { class: "watch-now", href: watchUrl(video.id), "aria-label": `Watch now: ${video.title}` },
        icon("play"),
        "Watch now",
      ),
    );
  }
  thumb.replaceChildren(...children);
}

/** The designed stand-in when there is no thumbnail (yet). */
export function placeholder(video) {
  const kind = video.status === "failed" ? "alert" : canWatch(video) ? "play" : "film";
  return h("div", { class: `placeholder placeholder-${video.status}` }, icon(kind, "icon placeholder-icon"));
}
