/**
 * Usage against your quotas, shown in the library:
 *
 *   Minutes this month   12.5 of 600 min     ▓▓░░░░░░  Resets 1 Jan 2027, 00:00
 *   Videos today         3 of 20 videos      ▓▓▓░░░░░  Resets in 5 hours (…)
 *   Storage              1.2 GB · no limit
 *
 * The figures come from GET /stats (this month's days, UTC) and its
 * `quotas`: {videos_per_day, minutes_per_month, bytes_stored}, each
 * {limit, used, resets_at}; a null (or 0) limit means no limit, a null
 * resets_at that deleting videos frees it.
 *
 * The panel does not poll. trackUsage() watches the API client's answers for
 * the ones that change usage (a video created or refused by a quota, one
 * ready, failed or deleted) and the panel asks again after those, and again
 * a few times while the API's cache still gives the answer from before.
 */

import { formatBytes, formatDateTime, formatRelative } from "./format.js";
import { h } from "./ui.js";

/** The quotas shown, in order, and how each reads. */
const QUOTAS = [
  {
    name: "minutes_per_month",
    label: "Minutes this month",
    figure: (used, limit) =>
      limit ? `${formatMinutes(used)} of ${formatMinutes(limit)} min` : `${formatMinutes(used)} min`,
  },
  {
    name: "videos_per_day",
    label: "Videos today",
    figure: (used, limit) => (limit ? `${used} of ${limit} videos` : `${used} ${used === 1 ? "video" : "videos"}`),
  },
  {
    name: "bytes_stored",
    label: "Storage",
    figure: (used, limit) => (limit ? `${formatBytes(used)} of ${formatBytes(limit)}` : formatBytes(used)),
  },
];

// Changes often come in bursts (a video created, then a second one): one
// request answers them all.
const SETTLE_MS = 400;
// The API serves /stats through its cache (VIDLINE_STATS_CACHE_TTL_S, 60 s
// by default), so an answer right after a change may still be the one from
// before it. While it is, ask again after these delays (ms), about 90 s in
// all, then stop until the next change.
const RECHECK_MS = [1000, 3000, 8000, 15_000, 30_000, 30_000];

/**
 * Usage changes seen in the API client's answers, and the last /stats
 * answer: it outlives the views, so a panel mounted after a change (say,
 * back in the library after deleting a video) knows an answer equal to the
 * last one is probably still the cached one.
 */
class UsageTracker extends EventTarget {
  changes = 0; // how many changes have been seen
  reflected = 0; // how many of them the last answer is known to include
  last = null; // the last /stats answer, as JSON

  /** Note a change and fire "changed". */
  changed() {
    this.changes += 1;
    this.dispatchEvent(new Event("changed"));
  }
}

/**
 * Watch `api`'s answers for the ones that change usage. Returns an
 * EventTarget firing "listed" when a list of videos arrives (so the token
 * works) and "changed" when usage changed: a video created (or refused by a
 * quota: the panel is behind), one that became ready or failed, one
 * deleted. An upload landing changes no figure (its bytes were counted when
 * its video was created), nor does a video starting to process.
 *
 * @param {import("./api.js").ApiClient} api
 * @returns {UsageTracker}
 */
export function trackUsage(api) {
  const tracker = new UsageTracker();
  const send = api.request.bind(api);
  api.request = async (method, path, options) => {
    let data;
    try {
      data = await send(method, path, options);
    } catch (error) {
      if (method === "POST" && path === "/videos" && error.code === "quota_exceeded") tracker.changed();
      throw error;
    }
    const effect = usageEffect(method, path, data);
    if (effect === "changed") tracker.changed();
    else if (effect) tracker.dispatchEvent(new Event(effect));
    return data;
  };
  return tracker;
}

/** "listed", "changed" or null: what an answered request means for the panel. */
function usageEffect(method, path, data) {
  const video = /^\/videos\/[^/?]+$/.test(path);
  if (method === "GET" && path === "/videos") return "listed";
  if (method === "POST" && path === "/videos") return "changed";
  if (method === "DELETE" && video) return "changed";
  if (method === "GET" && video && ["ready", "failed"].includes(data?.status)) return "changed";
  return null;
}

/**
 * Put the usage panel in the library, under its heading. It loads once the
 * library's list has arrived (the list comes first, and a refused token is
 * then answered once), and again after each change `tracker` reports.
 *
 * @param {HTMLElement} root the library view
 * @param {object} ctx
 * @param {import("./api.js").ApiClient} ctx.api
 * @param {UsageTracker} ctx.tracker from trackUsage()
 * @param {AbortSignal} ctx.signal ends the panel with its view
 */
export function mountUsage(root, { api, tracker, signal }) {
  const panel = createPanel();
  const head = root.querySelector(".page-head");
  if (head) head.after(panel.element);
  else root.prepend(panel.element);

  let loaded = false;
  let loading = false;
  let rechecks = 0;
  let timer = 0;

  async function load() {
    clearTimeout(timer);
    if (loading) return; // "changed" loads again once this answer is in
    loading = true;
    const seen = tracker.changes;
    const previous = tracker.last;
    panel.element.setAttribute("aria-busy", "true");
    let answer;
    try {
      // The panel shows the quotas only, which do not depend on the range: the
      // server's default range, so a device clock ahead of UTC cannot ask for
      // a day that has not begun there (a 400).
      const stats = await api.get("/stats", { signal });
      panel.show(stats);
      loaded = true;
      answer = JSON.stringify(stats);
      tracker.last = answer;
    } catch (error) {
      if (signal.aborted || error.isUnauthorized) return;
      panel.showError(error);
    } finally {
      loading = false;
      panel.element.setAttribute("aria-busy", "false");
    }
    if (tracker.changes !== seen) {
      later(SETTLE_MS); // a change came while asking: this answer may predate it
    } else if (tracker.reflected < seen && (answer ?? previous) === previous && rechecks < RECHECK_MS.length) {
      // Probably the cached answer from before the change (or no answer at all): ask again.
      later(RECHECK_MS[rechecks++]);
    } else {
      if (answer !== undefined) tracker.reflected = seen;
      rechecks = 0;
    }
  }

  function later(ms) {
    clearTimeout(timer);
    timer = setTimeout(load, ms);
  }

  tracker.addEventListener("listed", () => loaded || loading || load(), { signal });
  tracker.addEventListener(
    "changed",
    () => {
      rechecks = 0;
      later(SETTLE_MS);
    },
    { signal },
  );
  signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  return panel.element;
}

/** The panel's elements, and show()/showError() to fill them. */
function createPanel() {
  const items = h("div", { class: "usage-items" });
  const message = h("p", { class: "usage-message" });
  const element = h(
    "section",
    { class: "usage panel", "aria-labelledby": "usage-heading", "aria-busy": "true" },
    h("h2", { id: "usage-heading", class: "panel-title" }, "Your usage"),
    items,
    message,
  );
  const rows = new Map(QUOTAS.map((quota) => [quota.name, createRow(quota)]));
  items.append(...[...rows.values()].map((row) => row.element));
  // Hidden until the first figures arrive, so it never shows zeros it doesn't know.
  items.hidden = true;

  return {
    element,
    show(stats) {
      for (const quota of QUOTAS) {
        const given = stats?.quotas?.[quota.name];
        const row = rows.get(quota.name);
        // An API that does not report a quota: nothing to show for it.
        row.element.hidden = !given;
        if (given) {
          row.update({ used: Number(given.used) || 0, limit: Number(given.limit) || 0, resetsAt: given.resets_at });
        }
      }
      items.hidden = false;
      message.textContent = "";
    },
    showError(error) {
      message.textContent = `Usage can’t be shown right now: ${error.message}`;
    },
  };
}

/** One quota's row: its label, "x of y", a <meter> and when it resets. */
function createRow(quota) {
  const id = `usage-${quota.name}`;
  const figure = h("span", { class: "usage-figure", id: `${id}-figure` });
  const meter = h("meter", { id, class: "usage-meter", min: 0, "aria-describedby": `${id}-figure ${id}-note` });
  const note = h("p", { class: "usage-note", id: `${id}-note` });
  const element = h(
    "div",
    { class: "usage-item", dataset: { quota: quota.name } },
    h("div", { class: "usage-row" }, h("label", { for: id, class: "usage-label" }, quota.label), figure),
    meter,
    note,
  );

  function update({ used, limit, resetsAt }) {
    const unlimited = !(limit > 0);
    const full = !unlimited && used >= limit;
    element.classList.toggle("is-full", full);
    element.dataset.full = String(full);
    figure.textContent = unlimited ? `${quota.figure(used)} · no limit` : quota.figure(used, limit);
    // A meter needs a maximum: with no limit there is nothing to fill.
    meter.hidden = unlimited;
    if (!unlimited) {
      meter.max = limit;
      // Amber from 80 % full, red when full.
      meter.low = limit * 0.8;
      meter.high = limit * 0.9999;
      meter.optimum = 0;
      meter.value = Math.min(used, limit);
      meter.setAttribute("aria-valuetext", figure.textContent);
    }
    note.textContent = resetNote({ full, unlimited, resetsAt });
  }

  return { element, update };
}

/** When the quota frees up again, for people. */
function resetNote({ full, unlimited, resetsAt, now = Date.now() }) {
  if (unlimited) return "";
  // Storage has no reset time: it frees up as videos are deleted.
  if (!resetsAt) return full ? "Limit reached. Delete videos to free space." : "Frees up when you delete videos.";
  const at = formatDateTime(resetsAt);
  const ahead = new Date(resetsAt).getTime() - now;
  // Within the week "in 5 hours" says more than a date (formatRelative gives the date beyond it).
  const when = ahead > 60_000 && ahead < 7 * 86_400_000 ? `${formatRelative(resetsAt, now)} (${at})` : at;
  return `${full ? "Limit reached. Resets" : "Resets"} ${when}`;
}

/** 12 → "12", 12.34 → "12.3", 0.04 → "0.04". */
function formatMinutes(minutes) {
  if (!Number.isFinite(minutes)) return "0";
  if (minutes > 0 && minutes < 0.1) return minutes.toFixed(2);
  return minutes.toFixed(1).replace(/\.0$/, "");
}
