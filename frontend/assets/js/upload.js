/**
 * Send a file to S3 with the presigned POST that POST /videos returns.
 *
 *   const { video, upload } = await api.post("/videos", { title, filename, content_type, size_bytes });
 *   const controller = new AbortController();
 *   await sendToPresignedPost(upload, file, {
 *     signal: controller.signal,                       // controller.abort() cancels
 *     onProgress: ({ loaded, total }) => { ... },
 *   });
 *
 * It uses XMLHttpRequest rather than fetch because only XHR reports upload
 * progress (xhr.upload.onprogress). The form carries every field of
 * `upload.fields` first and the file last, as the part named "file": S3
 * ignores any field that comes after the file.
 */

export class UploadError extends Error {
  constructor(message, { status = 0 } = {}) {
    super(message);
    this.name = "UploadError";
    this.status = status;
  }
}

/**
 * @param {{url: string, fields: Record<string, string>}} upload
 * @param {File} file
 * @param {{signal?: AbortSignal, onProgress?: (p: {loaded: number, total: number}) => void}} [options]
 * @returns {Promise<void>} resolves when S3 has stored the file; rejects with
 *   UploadError, or a DOMException named "AbortError" when cancelled
 */
export function sendToPresignedPost(upload, file, { signal, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new DOMException("Upload cancelled", "AbortError"));

    const form = new FormData();
    for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
    form.append("file", file);

    const xhr = new XMLHttpRequest();
    xhr.open("POST", upload.url);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress?.({ loaded: event.loaded, total: event.total });
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      reject(new UploadError(s3ErrorMessage(xhr), { status: xhr.status }));
    });
    xhr.addEventListener("error", () =>
      reject(new UploadError("The upload was interrupted. Check your connection and try again.")),
    );
    xhr.addEventListener("timeout", () => reject(new UploadError("The upload timed out. Please try again.")));
    xhr.addEventListener("abort", () => reject(new DOMException("Upload cancelled", "AbortError")));
    const onAbort = () => xhr.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    // loadend follows load, error, timeout and abort alike.
    xhr.addEventListener("loadend", () => signal?.removeEventListener("abort", onAbort));
    xhr.send(form);
  });
}

/** S3 answers errors in XML: <Error><Code/><Message/></Error>. A sentence for people. */
export function s3ErrorMessage(xhr) {
  let detail = "";
  try {
    const doc = new DOMParser().parseFromString(xhr.responseText, "application/xml");
    detail = doc.querySelector("Message")?.textContent?.trim() ?? "";
  } catch {
    // Not XML: keep the generic message.
  }
  if (xhr.status === 403 && /expired/i.test(detail)) {
    return "The upload link expired before the file was sent. Please try again.";
  }
  return `The storage service refused the file (HTTP ${xhr.status}${detail ? `: ${detail}` : ""}).`;
}

/**
 * Smoothed transfer speed: an exponential moving average of the rate
 * between progress events, so the number does not jump around.
 */
export function createSpeedMeter({ smoothing = 0.3, minIntervalMs = 200 } = {}) {
  let lastTime = 0;
  let lastBytes = 0;
  let speed = 0;
  return {
    /** Feed the bytes sent so far; returns bytes per second. */
    update(loaded, now = performance.now()) {
      if (!lastTime) {
        lastTime = now;
        lastBytes = loaded;
        return speed;
      }
      const elapsed = now - lastTime;
      if (elapsed < minIntervalMs) return speed;
      const rate = ((loaded - lastBytes) * 1000) / elapsed;
      speed = speed ? smoothing * rate + (1 - smoothing) * speed : rate;
      lastTime = now;
      lastBytes = loaded;
      return speed;
    },
  };
}
