/**
 * The upload queue: files wait as "pending" until start(), then go one after
 * another through
 *
 *   POST /videos  →  presigned POST to S3 (with progress)  →  done
 *
 * or, for a file the API wants in parts (`upload.method` "multipart"),
 *
 *   POST /videos  →  remember it (resume.js)  →  parts to S3 (multipart.js)  →  complete  →  done
 *
 * A multipart upload that stops (a reload, a part that kept failing, the
 * session ending) keeps its video and its parts: choosing the same file again
 * offers to resume it (the item's `resume`), and Retry resumes a failed one.
 * Cancel, Start over and Dismiss delete the video and forget it.
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

import { ApiError } from "./api.js";
import { checkFile, titleFromFilename } from "./files.js";
import { sendInParts } from "./multipart.js";
import { ResumeStore } from "./resume.js";
import { createSpeedMeter, sendToPresignedPost } from "./upload.js";

let nextItemId = 1;

export class UploadQueue extends EventTarget {
  /**
   * @param {{api: import("./api.js").ApiClient, config: object, getOwner?: () => string | undefined,
   *   store?: ResumeStore}} deps  getOwner names the signed-in account, whose uploads can resume
   */
  constructor({ api, config, getOwner = () => "", store = new ResumeStore() }) {
    super();
    this.api = api;
    this.config = config;
    this.getOwner = getOwner;
    this.store = store;
    /**
     * @type {Array<{id: number, file: File, contentType: string, title: string,
     *   state: "pending"|"creating"|"sending"|"failed", loaded: number, speed: number,
     *   error?: string, video?: object, controller?: AbortController,
     *   resume?: {videoId: string, plan: object, title: string}}>}  resume: an unfinished multipart upload
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
      const resume = this.store.find(file, this.getOwner()) ?? undefined;
      this.items.push({
        id: nextItemId++,
        file,
        contentType: check.contentType,
        title: resume?.title ?? titleFromFilename(file.name),
        state: "pending",
        loaded: 0,
        speed: 0,
        resume,
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

  /** Drop a pending or failed item from the list; an unfinished upload it could resume is deleted. */
  remove(id) {
    const item = this.#find(id);
    if (!item || item.state === "creating" || item.state === "sending") return;
    this.#abandonResume(item);
    this.items = this.items.filter((candidate) => candidate !== item);
    this.#changed();
  }

  /** Upload a pending item's file from the start rather than resume its earlier upload. */
  startOver(id) {
    const item = this.#find(id);
    if (item?.state !== "pending" || !item.resume) return;
    this.#abandonResume(item);
    item.title = titleFromFilename(item.file.name);
    this.#changed();
  }

  /** Queue a failed item's file again, and upload it (resuming it when it went in parts). */
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
      const resumed = item.resume ? await this.#resumePoint(item, signal) : null;
      if (resumed?.landed) {
        // Its file arrived before the page lost track of it: nothing to send.
        this.#removeItem(item);
        this.dispatchEvent(new CustomEvent("uploaded", { detail: { video: resumed.video } }));
        return;
      }
      const title = resumed ? item.title : item.title.trim() || titleFromFilename(item.file.name);
      // Not given the signal: aborting the request would not undo a create
      // the API has already done. Cancel takes effect once it answers.
      const { video, upload } =
        resumed ??
        (await this.api.post("/videos", {
          title,
          filename: item.file.name,
          content_type: item.contentType,
          size_bytes: item.file.size,
        }));
      item.video = video;
      if (upload.method === "multipart" && !resumed) {
        item.resume = { videoId: video.id, plan: upload, title };
        this.store.save(item.file, this.getOwner(), item.resume);
      }
      if (signal.aborted) throw new DOMException("Upload cancelled", "AbortError");
      item.title = title;
      item.state = "sending";
      this.#changed();

      const meter = createSpeedMeter();
      const onProgress = ({ loaded, total }) => {
        // A POST's `total` is the whole form (fields + file), a little more than the file.
        item.loaded = loaded;
        item.total = total;
        item.speed = meter.update(loaded);
        this.#changed();
      };
      let landed;
      if (upload.method === "multipart") {
        landed = await sendInParts({
          api: this.api,
          videoId: video.id,
          plan: upload,
          file: item.file,
          signal,
          onProgress,
          uploadedParts: resumed?.parts,
        });
        this.store.forget(item.file);
      } else {
        await sendToPresignedPost(upload, item.file, { signal, onProgress });
        // The upload landed, so the worker will pick it up: show it as queued
        // right away rather than waiting for the first poll.
        landed = { ...video, status: video.status === "awaiting_upload" ? "queued" : video.status };
      }

      this.#removeItem(item);
      this.dispatchEvent(new CustomEvent("uploaded", { detail: { video: landed } }));
    } catch (error) {
      const cancelled = error.name === "AbortError";
      // A multipart upload that failed keeps its video and parts, so Retry
      // (or choosing the file again after a reload) goes on from there.
      const resumable = item.resume && !cancelled && !item.cleared;
      if (!resumable) {
        // Cancelled or failed: the video will never get its file, so delete it.
        if (item.video) {
          this.api.delete(`/videos/${encodeURIComponent(item.video.id)}`, { token }).catch(() => {});
        }
        this.#forgetResume(item);
      }
      if (cancelled) {
        this.#removeItem(item);
        if (!item.cleared) this.dispatchEvent(new CustomEvent("cancelled", { detail: { item } }));
        return;
      }
      if (item.cleared) return;
      item.state = "failed";
      item.error = resumable ? `${error.message} Retry goes on from where it stopped.` : error.message;
      this.#changed();
      this.dispatchEvent(new CustomEvent("failed", { detail: { item, error } }));
    } finally {
      item.controller = undefined;
    }
  }

  /**
   * Where an earlier multipart upload of the item's file stands:
   * {video, upload, parts} to go on, {landed: true, video} when its file is
   * already in, or null (and the entry forgotten) when it cannot go on.
   */
  async #resumePoint(item, signal) {
    const path = `/videos/${encodeURIComponent(item.resume.videoId)}`;
    try {
      const video = await this.api.get(path, { signal });
      if (video.status === "queued" || video.status === "processing" || video.status === "ready") {
        this.#forgetResume(item);
        return { landed: true, video };
      }
      if (video.status !== "awaiting_upload") {
        this.#forgetResume(item);
        return null;
      }
      const listing = await this.api.get(`${path}/upload`, { signal });
      const upload = {
        ...item.resume.plan,
        method: "multipart",
        upload_id: listing.upload_id,
        part_size: listing.part_size,
        part_count: listing.part_count,
      };
      return { video, upload, parts: listing.parts };
    } catch (error) {
      // The video is gone, or no longer takes parts: upload the file afresh.
      if (error instanceof ApiError && error.status >= 400 && error.status < 500 && !error.isUnauthorized) {
        this.#forgetResume(item);
        return null;
      }
      throw error;
    }
  }

  /** Delete the unfinished upload the item could resume, and forget it. */
  #abandonResume(item) {
    if (!item.resume) return;
    this.api.delete(`/videos/${encodeURIComponent(item.resume.videoId)}`).catch(() => {});
    this.#forgetResume(item);
  }

  #forgetResume(item) {
    if (item.resume) this.store.forget(item.file);
    item.resume = undefined;
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
