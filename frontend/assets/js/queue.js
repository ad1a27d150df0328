/**
 * The upload queue: files wait as "pending" until start(), then go one after
 * another through
 *
 *   POST /videos  →  presigned POST to S3 (with progress)  →  done
 *
 * It lives outside the views so an upload keeps going while you open a
 * video, and it tells the UI what happens through events:
 *
 *   "change"    the items changed (re-render the queue)
 *   "uploaded"  detail: {video} — the file landed; processing starts by itself
 *   "cancelled" detail: {item}
 *   "failed"    detail: {item, error}
 *
 * A video whose file never arrives is deleted (on Cancel, a failed transfer
 * or signing out). When even that cannot get through, the API shows the
 * video as failed once its upload link has expired, and its owner can
 * delete it from the library.
 */

import { checkFile, titleFromFilename } from "./files.js";
import { createSpeedMeter, sendToPresignedPost } from "./upload.js";

let nextItemId = 1;

export class UploadQueue extends EventTarget {
  /** @param {{api: import("./api.js").ApiClient, config: object}} deps */
  constructor({ api, config }) {
    super();
    this.api = api;
    this.config = config;
    /**
     * @type {Array<{id: number, file: File, contentType: string, title: string,
     *   state: "pending"|"creating"|"sending"|"failed", loaded: number, speed: number,
     *   error?: string, video?: object, controller?: AbortController}>}
     */
    this.items = [];
    this.running = false;
  }

  /** True while a file is being sent (used to warn before leaving the page). */
  get busy() {
    return this.items.some((item) => item.state === "creating" || item.state === "sending");
  }

  get pendingCount() {
    return this.items.filter((item) => item.state === "pending").length;
  }

  /**
   * Check and queue files. Rejected files never reach the API.
   * @returns {{added: number, rejected: string[]}} reasons, one per rejected file
   */
  add(files) {
    const rejected = [];
    let added = 0;
    for (const file of files) {
      const check = checkFile(file, this.config);
      if (!check.ok) {
        rejected.push(check.reason);
        continue;
      }
      this.items.push({
        id: nextItemId++,
        file,
        contentType: check.contentType,
        title: titleFromFilename(file.name),
        state: "pending",
        loaded: 0,
        speed: 0,
      });
      added += 1;
    }
    if (added) this.#changed();
    return { added, rejected };
  }

  setTitle(id, title) {
    const item = this.#find(id);
    if (item) item.title = title;
  }

  /** Drop a pending or failed item from the list. */
  remove(id) {
    this.items = this.items.filter((item) => item.id !== id || item.state === "creating" || item.state === "sending");
    this.#changed();
  }

  /** Queue a failed item's file again, and upload it. */
  retry(id) {
    const item = this.#find(id);
    if (item?.state !== "failed") return;
    Object.assign(item, { state: "pending", loaded: 0, total: 0, speed: 0, error: undefined, video: undefined });
    this.#changed();
    this.start();
  }

  /** Upload every pending file, one after another. Files added meanwhile join in. */
  async start() {
    if (this.running) return;
    this.running = true;
    try {
      let item;
      while ((item = this.items.find((candidate) => candidate.state === "pending"))) {
        await this.#send(item);
      }
    } finally {
      this.running = false;
      this.#changed();
    }
  }

  /** Cancel the item being sent; the video created for it is deleted. */
  cancel(id) {
    this.#find(id)?.controller?.abort();
  }

  /**
   * Stop everything, e.g. on signing out. Interrupted uploads still delete
   * their videos: each kept the token it started with.
   *
   * With `keepSending` (the session expired), files already on their way to
   * S3 carry on, since the presigned POST needs no token; only the items not
   * sent yet are dropped.
   */
  clear({ keepSending = false } = {}) {
    const keep = (item) => keepSending && item.state === "sending";
    for (const item of this.items) {
      if (keep(item)) continue;
      item.cleared = true; // no "cancelled" event: nobody asked to cancel
      item.controller?.abort();
    }
    this.items = this.items.filter(keep);
    this.#changed();
  }

  async #send(item) {
    item.controller = new AbortController();
    const { signal } = item.controller;
    // Saved now so the clean-up below still works after a sign-out.
    const token = this.api.getToken();
    item.state = "creating";
    this.#changed();

    try {
      const title = item.title.trim() || titleFromFilename(item.file.name);
      // Not given the signal: aborting the request would not undo a create
      // the API has already done. Cancel takes effect once it answers.
      const { video, upload } = await this.api.post("/videos", {
        title,
        filename: item.file.name,
        content_type: item.contentType,
        size_bytes: item.file.size,
      });
      item.video = video;
      if (signal.aborted) throw new DOMException("Upload cancelled", "AbortError");
      item.title = title;
      item.state = "sending";
      this.#changed();

      const meter = createSpeedMeter();
      await sendToPresignedPost(upload, item.file, {
        signal,
        onProgress: ({ loaded, total }) => {
          // `total` is the whole form (fields + file), a little more than the file.
          item.loaded = loaded;
          item.total = total;
          item.speed = meter.update(loaded);
          this.#changed();
        },
      });

      this.#removeItem(item);
      // The upload landed, so the worker will pick it up: show it as queued
      // right away rather than waiting for the first poll.
      const landed = { ...video, status: video.status === "awaiting_upload" ? "queued" : video.status };
      this.dispatchEvent(new CustomEvent("uploaded", { detail: { video: landed } }));
    } catch (error) {
      // Cancelled or failed: the video will never get its file, so delete it.
      if (item.video) {
        this.api.delete(`/videos/${encodeURIComponent(item.video.id)}`, { token }).catch(() => {});
      }
      if (error.name === "AbortError") {
        this.#removeItem(item);
        if (!item.cleared) this.dispatchEvent(new CustomEvent("cancelled", { detail: { item } }));
        return;
      }
      if (item.cleared) return;
      item.state = "failed";
      item.error = error.message;
      this.#changed();
      this.dispatchEvent(new CustomEvent("failed", { detail: { item, error } }));
    } finally {
      item.controller = undefined;
    }
  }

  #find(id) {
    return this.items.find((item) => item.id === id);
  }

  #removeItem(item) {
    this.items = this.items.filter((candidate) => candidate !== item);
    this.#changed();
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
