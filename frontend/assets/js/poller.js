/**
 * Follow a video until it is ready or failed.
 *
 * Polls GET /videos/{id} with back-off: 1 s, then ×1.5 up to 10 s, starting
 * again from 1 s whenever something shown changed (status, progress, whether
 * it can be watched), so progress moves smoothly while encoding and a stalled
 * queue costs few requests. Stops when the video reaches a final status, is
 * gone (404), or `signal` aborts — when the card is removed, the view
 * changes or the person signs out.
 */

import { isFinal } from "./status.js";
import { sleep } from "./ui.js";

const FIRST_DELAY_MS = 1000;
const FACTOR = 1.5;
const MAX_DELAY_MS = 10_000;

/**
 * @param {import("./api.js").ApiClient} api
 * @param {object} video the last known state
 * @param {object} handlers
 * @param {AbortSignal} handlers.signal
 * @param {(video: object, previous: object) => void} handlers.onChange
 * @param {() => void} [handlers.onGone] the video was deleted
 */
export async function followVideo(api, video, { signal, onChange, onGone = () => {} }) {
  let delay = FIRST_DELAY_MS;
  let last = video;
  while (!isFinal(last.status)) {
    try {
      await sleep(delay, signal);
      const next = await api.get(`/videos/${encodeURIComponent(last.id)}`, { signal });
      if (changed(last, next)) {
        const previous = last;
        last = next;
        delay = FIRST_DELAY_MS;
        onChange(next, previous);
        continue;
      }
    } catch (error) {
      if (signal.aborted || error.isUnauthorized) return;
      if (error.isNotFound) return onGone();
      // Anything else (network blip, 5xx): keep trying, more slowly.
    }
    delay = Math.min(delay * FACTOR, MAX_DELAY_MS);
  }
}

/** What a view shows changed: the status, the progress, or whether (and how) it can be watched. */
function changed(last, next) {
  return (
    next.status !== last.status ||
    next.progress !== last.progress ||
    next.playable !== last.playable ||
    Boolean(next.outputs?.hls_url) !== Boolean(last.outputs?.hls_url) ||
    Boolean(next.outputs?.thumbnail_url) !== Boolean(last.outputs?.thumbnail_url)
  );
}
