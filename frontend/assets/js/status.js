/** A video's status, as people read it. */

export const FINAL_STATUSES = new Set(["ready", "failed"]);

export function isFinal(status) {
  return FINAL_STATUSES.has(status);
}

/** "processing" + 42 → "Processing 42%". */
export function statusLabel(video) {
  switch (video.status) {
    case "awaiting_upload":
      return "Uploading";
    case "queued":
      return "Queued";
    case "processing":
      return `Processing ${Math.round(video.progress ?? 0)}%`;
    case "ready":
      return "Ready";
    case "failed":
      return "Failed";
    default:
      return video.status;
  }
}

/** A status badge: readable text, coloured by status through CSS. */
export function renderBadge(badge, video) {
  badge.className = `badge badge-${video.status}`;
  badge.textContent = statusLabel(video);
  return badge;
}
