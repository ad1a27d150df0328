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
   * Stop everything (signing out or the session ended). With `cleanUp`, the
   * video of an interrupted upload is deleted; without (no valid token any
   * more) the API removes the orphan itself later.
   */
  clear({ cleanUp = true } = {}) {
    for (const item of this.items) {
      item.cleared = true; // no "cancelled" event: nobody asked to cancel
      if (!cleanUp) item.skipCleanUp = true;
      item.controller?.abort();
    }
    this.items = [];
    this.#changed();
  }

  async #send(item) {
    item.controller = new AbortController();
    const { signal } = item.controller;
    item.state = "creating";
    this.#changed();

    try {
      const title = item.title.trim() || titleFromFilename(item.file.name);
      const { video, upload } = await this.api.post(
        "/videos",
        { title, filename: item.file.name, content_type: item.contentType, size_bytes: item.file.size },
        { signal },
      );
      item.video = video;
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
      if (error.name === "AbortError") {
        this.#removeItem(item);
        // Don't leave an "awaiting_upload" video behind.
        if (item.video && !item.skipCleanUp) {
          this.api.delete(`/videos/${encodeURIComponent(item.video.id)}`).catch(() => {});
        }
        if (!item.cleared) this.dispatchEvent(new CustomEvent("cancelled", { detail: { item } }));
        return;
      }
      if (item.cleared) return;
      item.state = "failed";
      item.error = error.message;
      if (item.video) {
        // The presigned POST failed; the half-made video is no use to anyone.
        this.api.delete(`/videos/${encodeURIComponent(item.video.id)}`).catch(() => {});
      }
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
