/**
 * Send a big file to S3 in parts, with the multipart plan that POST /videos
 * returns when `upload.method` is "multipart".
 *
 *   const { video, upload } = await api.post("/videos", { ... });
 *   if (upload.method === "multipart") {
 *     const landed = await sendInParts({ api, videoId: video.id, plan: upload, file, signal, onProgress });
 *   }
 *
 * Four parts travel at once. Part URLs are presigned PUTs the API hands out
 * in batches (POST /videos/{id}/upload/parts), asked for a batch ahead of
 * need so a part never waits for its URL, and asked for again when S3 says
 * one has expired. Each part is tried up to five times, with exponential
 * back-off and jitter, after a network error, a 5xx or an expired URL; any
 * other refusal ends the upload. Progress counts the finished parts plus the
 * bytes of the parts in flight, and never goes down, even when a part starts
 * again. When every part is in, POST /videos/{id}/upload/complete hands the
 * part numbers and ETags over and returns the video, now queued.
 *
 * To resume (the tab was reloaded), pass `uploadedParts`: what GET
 * /videos/{id}/upload lists. Those parts are not sent again.
 *
 * The ETag of each part comes from S3's answer to the PUT, so the bucket (or
 * the local S3 front) must list ETag in its CORS ExposeHeaders.
 */

import { ApiError } from "./api.js";
import { UploadError, s3ErrorMessage } from "./upload.js";
import { sleep } from "./ui.js";

export const DEFAULTS = Object.freeze({
  concurrency: 4,
  maxTries: 5,
  // Part URLs asked for at once: enough to keep four parts busy for a while,
  // few enough that none waits long enough to expire.
  batchSize: 8,
  baseDelayMs: 500,
  maxDelayMs: 15_000,
});

/**
 * @param {object} args
 * @param {import("./api.js").ApiClient} args.api
 * @param {string} args.videoId
 * @param {{part_size: number, part_count: number}} args.plan
 * @param {Blob} args.file
 * @param {AbortSignal} [args.signal]  aborting stops every part; rejects with an AbortError
 * @param {(p: {loaded: number, total: number}) => void} [args.onProgress]
 * @param {Array<{part_number: number, etag: string, size: number}>} [args.uploadedParts] already in S3
 * @param {Partial<typeof DEFAULTS>} [args.options]
 * @returns {Promise<object>} the video, as POST .../upload/complete returns it
 */
export async function sendInParts({ api, videoId, plan, file, signal, onProgress, uploadedParts = [], options = {} }) {
  const settings = { ...DEFAULTS, ...options };
  const partSize = Number(plan.part_size);
  const partCount = Number(plan.part_count);
  if (!(partSize > 0) || !(partCount > 0) || Math.ceil(file.size / partSize) !== partCount) {
    throw new UploadError("The upload plan does not fit this file. Please try again.");
  }
  const sizeOf = (n) => Math.min(partSize, file.size - (n - 1) * partSize);
  const videoPath = `/videos/${encodeURIComponent(videoId)}/upload`;

  // Parts S3 already holds, whole: a listed part of the wrong size is sent again.
  const etags = new Map();
  for (const part of uploadedParts) {
    const n = Number(part.part_number);
    if (n >= 1 && n <= partCount && part.etag && Number(part.size) === sizeOf(n)) etags.set(n, part.etag);
  }
  const todo = [];
  for (let n = 1; n <= partCount; n += 1) if (!etags.has(n)) todo.push(n);

  const progress = createProgress(file.size, onProgress);
  for (const n of etags.keys()) progress.finish(n, sizeOf(n));

  const urls = new PartUrls({ api, path: `${videoPath}/parts`, signal, batchSize: settings.batchSize, todo });
  // Stops every part on cancel, and the other parts as soon as one fails for
  // good. (Not AbortSignal.any: Safari before 17.4, on many phones, lacks it.)
  const stop = new AbortController();
  const stopSignal = stop.signal;
  const onCancel = () => stop.abort();
  if (signal?.aborted) stop.abort();
  signal?.addEventListener("abort", onCancel, { once: true });

  const sendPart = async (n) => {
    const start = (n - 1) * partSize;
    const body = file.slice(start, start + sizeOf(n));
    for (let attempt = 1; ; attempt += 1) {
      try {
        const url = await urls.get(n);
        const etag = await putPart(url, body, {
          signal: stopSignal,
          onProgress: (loaded) => progress.inFlight(n, loaded),
        });
        progress.finish(n, body.size);
        etags.set(n, etag);
        urls.forget(n);
        return;
      } catch (error) {
        progress.inFlight(n, 0);
        if (error.name === "AbortError" || !isRetryable(error) || attempt >= settings.maxTries) throw error;
        if (error.expired) urls.forget(n);
        await sleep(backoffMs(attempt, settings), stopSignal);
      }
    }
  };

  const queue = [...todo];
  const worker = async () => {
    for (let n = queue.shift(); n !== undefined; n = queue.shift()) {
      urls.used(n);
      await sendPart(n);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(settings.concurrency, queue.length) }, worker));
  } catch (error) {
    stop.abort();
    if (signal?.aborted) throw new DOMException("Upload cancelled", "AbortError");
    throw error;
  } finally {
    signal?.removeEventListener("abort", onCancel);
  }

  const parts = [...etags].sort(([a], [b]) => a - b).map(([part_number, etag]) => ({ part_number, etag }));
  return api.post(`${videoPath}/complete`, { parts }, { signal });
}

/** Worth another try: a part S3 did not take for a passing reason, or the API unreachable or failing. */
function isRetryable(error) {
  if (error instanceof ApiError) return error.status === 0 || error.status >= 500;
  return Boolean(error.retryable);
}

/**
 * Delay before try `attempt + 1`: doubling from baseDelayMs up to maxDelayMs,
 * with "equal jitter" (half fixed, half random) so parts that failed together
 * do not all come back at the same moment.
 */
export function backoffMs(attempt, { baseDelayMs, maxDelayMs }, random = Math.random) {
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
  return ceiling / 2 + random() * (ceiling / 2);
}

/**
 * Overall progress: bytes of finished parts plus bytes of parts in flight,
 * reported only when it goes up (a part that starts again loses its bytes in
 * flight, but the bar does not move back).
 */
function createProgress(total, onProgress) {
  const inFlight = new Map();
  let finished = 0;
  let reported = 0;
  const report = () => {
    let loaded = finished;
    for (const bytes of inFlight.values()) loaded += bytes;
    loaded = Math.min(loaded, total);
    if (loaded <= reported) return;
    reported = loaded;
    onProgress?.({ loaded, total });
  };
  return {
    inFlight(n, bytes) {
      inFlight.set(n, bytes);
      report();
    },
    finish(n, bytes) {
      inFlight.delete(n);
      finished += bytes;
      report();
    },
  };
}

/**
 * Presigned part URLs, asked for in batches: the part wanted now and the next
 * parts to send after it, and the next batch as soon as fewer than a batch
 * are waiting unused, so the parts in flight never wait for a URL.
 */
class PartUrls {
  constructor({ api, path, signal, batchSize, todo }) {
    Object.assign(this, { api, path, signal, batchSize });
    this.order = [...todo]; // parts still to start, in the order they will
    this.urls = new Map(); // part number → url
    this.pending = new Map(); // part number → promise of its batch
  }

  /** A URL for part `n`, asking the API when none is at hand. */
  async get(n) {
    if (!this.urls.has(n)) await (this.pending.get(n) ?? this.#fetch([n, ...this.#next(this.batchSize - 1, n)]));
    const url = this.urls.get(n);
    if (!url) throw new UploadError(`The API gave no upload link for part ${n}.`);
    return url;
  }

  /**
   * Part `n` starts now: ask for its URL if none is at hand or on its way,
   * along with the next parts', and top up the URLs waiting for the parts after it.
   */
  used(n) {
    const ready = (m) => this.urls.has(m) || this.pending.has(m);
    const waiting = this.order.filter((m) => m !== n && ready(m)).length;
    if (!ready(n) || waiting < this.batchSize) {
      // `order` is the sending order, so `n` (when it needs a URL) comes first.
      const wanted = this.order.filter((m) => !ready(m)).slice(0, this.batchSize);
      // A failure here is not lost: get() asks again for the part it needs.
      if (wanted.length) this.#fetch(wanted).catch(() => {});
    }
    this.order = this.order.filter((candidate) => candidate !== n);
  }

  /** S3 said part `n`'s URL expired: the next get() asks for a fresh one. */
  forget(n) {
    this.urls.delete(n);
  }

  /** Up to `count` parts still to send that have no URL nor a request for one, other than `except`. */
  #next(count, except) {
    return this.order.filter((m) => m !== except && !this.urls.has(m) && !this.pending.has(m)).slice(0, count);
  }

  #fetch(numbers) {
    const request = this.api
      .post(this.path, { part_numbers: numbers }, { signal: this.signal })
      .then((answer) => {
        for (const part of answer?.parts ?? []) this.urls.set(Number(part.part_number), part.url);
      })
      .finally(() => numbers.forEach((m) => this.pending.delete(m)));
    numbers.forEach((m) => this.pending.set(m, request));
    return request;
  }
}

/**
 * PUT one part with XMLHttpRequest (for its upload progress). Resolves with
 * S3's ETag; rejects with an UploadError whose `retryable` says whether
 * trying again may help (`expired`: with a fresh URL), or an AbortError when
 * `signal` aborts.
 */
function putPart(url, body, { signal, onProgress }) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new DOMException("Upload cancelled", "AbortError"));
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    // A connection that goes quiet (a phone between cells) may never fail by
    // itself: with no progress for STALL_MS, and no answer that long once the
    // bytes are sent, the request is given up and the part tried again.
    let stall = 0;
    const watch = () => {
      clearTimeout(stall);
      stall = setTimeout(() => xhr.abort(), STALL_MS);
    };
    xhr.upload.addEventListener("progress", (event) => {
      watch();
      onProgress(event.loaded);
    });
    xhr.upload.addEventListener("load", watch);
    xhr.addEventListener("loadend", () => clearTimeout(stall));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        const etag = xhr.getResponseHeader("ETag");
        if (etag) return resolve(etag);
        return reject(
          new UploadError("The storage service did not show the part's ETag (its CORS rules must expose ETag)."),
        );
      }
      const message = s3ErrorMessage(xhr);
      const expired = xhr.status === 403 && /expired/i.test(xhr.responseText);
      const error = new UploadError(message, { status: xhr.status });
      error.expired = expired;
      error.retryable =
        expired ||
        xhr.status >= 500 ||
        xhr.status === 408 ||
        xhr.status === 429 ||
        (xhr.status === 400 && RETRYABLE_S3_CODES.has(s3ErrorCode(xhr)));
      reject(error);
    });
    const interrupted = () => {
      // Only our own signal cancels; anything else that stopped the request
      // (a dropped connection) is worth another try.
      if (signal?.aborted) return reject(new DOMException("Upload cancelled", "AbortError"));
      const error = new UploadError("The upload was interrupted. Check your connection and try again.");
      error.retryable = true;
      reject(error);
    };
    xhr.addEventListener("error", interrupted);
    xhr.addEventListener("timeout", interrupted);
    xhr.addEventListener("abort", interrupted);
    const onAbort = () => xhr.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    xhr.addEventListener("loadend", () => signal?.removeEventListener("abort", onAbort));
    watch();
    xhr.send(body);
  });
}

/** How long a part's request may go without progress (or, once sent, without an answer). */
const STALL_MS = 60_000;

/** S3's 400s that a flaky connection causes: the same part, sent again, goes through. */
const RETRYABLE_S3_CODES = new Set(["RequestTimeout", "IncompleteBody"]);

/** The <Code> of S3's XML error, or "". */
function s3ErrorCode(xhr) {
  try {
    const doc = new DOMParser().parseFromString(xhr.responseText, "application/xml");
    return doc.querySelector("Code")?.textContent?.trim() ?? "";
  } catch {
    return "";
  }
}
