/** Checking a chosen file before anything is sent to the API. */

import { formatBytes } from "./format.js";

// Some systems give no MIME type for these; infer it from the extension.
const TYPE_BY_EXTENSION = {
  mp4: "video/mp4",
  m4v: "video/mp4",
  mov: "video/quicktime",
  webm: "video/webm",
  mkv: "video/x-matroska",
};

// What people call each type, for messages.
const TYPE_NAMES = {
  "video/mp4": "MP4",
  "video/quicktime": "MOV",
  "video/webm": "WebM",
  "video/x-matroska": "MKV",
};

export function extensionOf(filename) {
  const dot = filename.lastIndexOf(".");
  return dot > 0 ? filename.slice(dot + 1).toLowerCase() : "";
}

/** file.type, or the type its extension implies when the browser gave none. */
export function contentTypeOf(file) {
  return file.type || TYPE_BY_EXTENSION[extensionOf(file.name)] || "";
}

/** ["video/mp4", "video/webm"] → "MP4 or WebM". */
export function describeTypes(types) {
  const names = [...new Set(types.map((type) => TYPE_NAMES[type] ?? type))];
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
}

/** The `accept` attribute for the file input: the types plus their extensions. */
export function acceptAttribute(types) {
  const extensions = Object.entries(TYPE_BY_EXTENSION)
    .filter(([, type]) => types.includes(type))
    .map(([extension]) => `.${extension}`);
  return [...types, ...extensions].join(",");
}

/**
 * Can this file be uploaded? Returns {ok: true, contentType} or
 * {ok: false, reason} with a sentence that names the file.
 */
export function checkFile(file, config) {
  const name = `"${file.name}"`;
  const contentType = contentTypeOf(file);
  if (!config.allowedContentTypes.includes(contentType)) {
    return {
      ok: false,
      reason:
        `${name} is not a video we can take (${contentType || "unknown type"}). ` +
        `Choose an ${describeTypes(config.allowedContentTypes)} file.`,
    };
  }
  if (file.size <= 0) {
    return { ok: false, reason: `${name} is empty (0 bytes). Choose another file.` };
  }
  if (file.size > config.maxUploadBytes) {
    return {
      ok: false,
      reason: `${name} is too large (${formatBytes(file.size)}). The limit is ${formatBytes(config.maxUploadBytes)}.`,
    };
  }
  return { ok: true, contentType };
}

// The API accepts titles up to 200 characters.
const MAX_TITLE_LENGTH = 200;

/** "Holiday in Rome.final.mp4" → "Holiday in Rome.final". */
export function titleFromFilename(filename) {
  const dot = filename.lastIndexOf(".");
  const base = (dot > 0 ? filename.slice(0, dot) : filename).trim();
  return (base || filename).slice(0, MAX_TITLE_LENGTH);
}
