/** Formatting for people: sizes, durations, speeds and dates. */

// Binary units, labelled the way most people know them (1 MB = 1024 × 1024
// bytes), so a 2 GiB limit reads "2 GB".
const KB = 1024;
const MB = KB * 1024;
const GB = MB * 1024;

/** 12_345_678 → "11.8 MB"; 2 ** 31 → "2 GB". */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "";
  const trim = (value) => value.toFixed(1).replace(/\.0$/, "");
  if (bytes >= GB) return `${trim(bytes / GB)} GB`;
  if (bytes >= MB) return `${trim(bytes / MB)} MB`;
  if (bytes >= KB) return `${Math.round(bytes / KB)} KB`;
  return `${bytes} B`;
}

/** Size in megabytes, always: 325_747 → "0.3 MB". */
export function formatMegabytes(bytes) {
  return Number.isFinite(bytes) ? `${(bytes / MB).toFixed(1)} MB` : "";
}

/** Bytes per second → "3.2 MB/s" (two decimals below 1 MB/s, so slow links don't read "0.0"). */
export function formatSpeed(bytesPerSecond) {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "";
  const mb = bytesPerSecond / MB;
  return `${mb.toFixed(mb < 1 ? 2 : 1)} MB/s`;
}

/** 83.4 → "1:23", 3725 → "1:02:05". */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** ISO timestamp → "12 Mar 2025, 14:05" in the reader's locale. */
export function formatDateTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : dateTime.format(date);
}

/** ISO timestamp → "just now", "5 minutes ago", "yesterday"; older than a week → the date. */
export function formatRelative(iso, now = Date.now()) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const seconds = Math.round((date.getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), "day");
  return formatDateTime(iso);
}
