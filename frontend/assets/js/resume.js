/**
 * What the browser remembers about multipart uploads under way, so that one
 * interrupted by a reload (or a crash) can go on when the same file is
 * chosen again.
 *
 *   const store = new ResumeStore();
 *   store.save(file, owner, { videoId, plan, title });   // once the upload starts
 *   store.find(file, owner);                              // → the entry, or null
 *   store.forget(file);                                   // done, cancelled, or gone
 *
 * A file is known by its fingerprint: name, size and last-modified time
 * (the browser gives no path, and hashing gigabytes would take longer than
 * resuming saves). Entries live in localStorage, keyed by fingerprint, and
 * belong to the account that started them. Entries older than the plan's
 * `expires_at` are dropped when read: the API has abandoned that upload.
 */

const STORAGE_KEY = "vidline.uploads";

/** "clip.mp4|123456|1700000000000": the same file chosen again has the same fingerprint. */
export function fingerprint(file) {
  return `${file.name}|${file.size}|${file.lastModified}`;
}

export class ResumeStore {
  /** @param {Storage} [storage] localStorage unless given */
  constructor(storage = globalThis.localStorage) {
    this.storage = storage;
  }

  /**
   * The upload of `file` that `owner` started and did not finish, or null.
   * @returns {{videoId: string, plan: object, title: string, owner: string, savedAt: string} | null}
   */
  find(file, owner, now = Date.now()) {
    const entries = this.#read();
    const entry = entries[fingerprint(file)];
    if (!entry || entry.owner !== owner) return null;
    const expiresAt = Date.parse(entry.plan?.expires_at ?? "");
    if (Number.isFinite(expiresAt) && expiresAt <= now) {
      this.forget(file);
      return null;
    }
    return entry;
  }

  /** Remember that `owner` is uploading `file` to `videoId` with this plan. */
  save(file, owner, { videoId, plan, title }) {
    const entries = this.#read();
    entries[fingerprint(file)] = { videoId, plan, title, owner, savedAt: new Date().toISOString() };
    this.#write(entries);
  }

  forget(file) {
    const entries = this.#read();
    if (!(fingerprint(file) in entries)) return;
    delete entries[fingerprint(file)];
    this.#write(entries);
  }

  #read() {
    try {
      const entries = JSON.parse(this.storage?.getItem(STORAGE_KEY) ?? "{}");
      return entries && typeof entries === "object" && !Array.isArray(entries) ? entries : {};
    } catch {
      return {}; // unreadable: start afresh rather than break uploading
    }
  }

  #write(entries) {
    try {
      if (Object.keys(entries).length) this.storage?.setItem(STORAGE_KEY, JSON.stringify(entries));
      else this.storage?.removeItem(STORAGE_KEY);
    } catch {
      // Storage full or disabled (private mode): the upload still works, it just cannot resume.
    }
  }
}
