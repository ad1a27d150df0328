/**
 * Small DOM helpers. Everything that shows API data goes through
 * textContent / attributes — never innerHTML — because titles, file names
 * and error messages are user data.
 */

/**
 * Create an element.
 *
 *   h("button", { class: "btn", type: "button", onClick: save }, "Save")
 *
 * Props: `class`, `text`, `dataset` ({videoId: "…"} → data-video-id),
 * `on<Event>` listeners, `hidden`/`disabled` booleans, anything else as an
 * attribute (null/false skip it). Children: nodes or strings (as text).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  el.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
// 24×24 stroke icons (drawn in the style of Lucide/Feather).
const ICONS = {
  upload: "M12 16V4m0 0L7 9m5-5 5 5M4 16v3a1 1 0 0 0 1 1h14a1 1 0 0 0 1-1v-3",
  film: "M4 5h16v14H4zM8 5v14M16 5v14M4 9.5h4M4 14.5h4M16 9.5h4M16 14.5h4",
  play: "M8 5.5v13l11-6.5z",
  back: "M15 18l-6-6 6-6",
  trash: "M4 7h16M10 11v6M14 11v6M6 7l1 12a1 1 0 0 0 1 1h8a1 1 0 0 0 1-1l1-12M9 7V4h6v3",
  x: "M6 6l12 12M18 6 6 18",
  alert: "M12 8v5m0 3.5v.5M10.3 3.9 2.4 17.5A2 2 0 0 0 4.1 20.5h15.8a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z",
  check: "M5 12.5l4.5 4.5L19 7.5",
  clock: "M12 7v5l3 2M12 21a9 9 0 1 1 0-18 9 9 0 0 1 0 18z",
  file: "M14 3H7a1 1 0 0 0-1 1v16a1 1 0 0 0 1 1h10a1 1 0 0 0 1-1V7zM14 3v4h4M10 11v6l5-3z",
};

/** A decorative inline SVG icon (hidden from assistive technology). */
export function icon(name, className = "icon") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", className);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

// Messages waiting for the live region, and its timers.
let waiting = [];
let showTimer = 0;
let toastTimer = 0;

/**
 * Announce a status change to screen readers through the page's one polite
 * live region, and show it as a toast for a few seconds. The text stays in
 * the region afterwards (just visually hidden again) until the next message.
 * Messages announced close together are read, and shown, together.
 */
export function announce(message, { toast = true } = {}) {
  const region = document.getElementById("announcer");
  if (!region) return;
  waiting.push({ message, toast });
  if (showTimer) return; // joins the messages already waiting
  // Clearing first, then filling a moment later, makes a repeated message
  // ("Upload complete" twice) be read again. A timer, unlike
  // requestAnimationFrame, also runs in a background tab.
  region.replaceChildren();
  region.classList.remove("is-shown");
  clearTimeout(toastTimer);
  showTimer = setTimeout(() => {
    const messages = waiting;
    waiting = [];
    showTimer = 0;
    region.replaceChildren(...messages.map(({ message }) => h("p", {}, message)));
    if (messages.some(({ toast }) => toast)) {
      region.classList.add("is-shown");
      toastTimer = setTimeout(() => region.classList.remove("is-shown"), 5000);
    }
  }, 50);
}

/**
 * Ask for confirmation in a modal <dialog>. Resolves true when confirmed.
 * The native modal dialog traps focus, closes on Escape and returns focus to
 * the element that opened it. Pass the view's `signal` so the dialog closes
 * (as cancelled) when the view goes away.
 */
export function confirmDialog({ title, message, confirmLabel, cancelLabel = "Cancel", danger = false, signal }) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const cancel = h("button", { type: "button", class: "btn btn-secondary", value: "cancel" }, cancelLabel);
    const confirm = h(
      "button",
      { type: "submit", class: danger ? "btn btn-danger" : "btn btn-primary", value: "confirm" },
      confirmLabel,
    );
    const titleId = `dialog-title-${Date.now()}`;
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": titleId },
      h(
        "form",
        { method: "dialog", class: "dialog-body" },
        h("h2", { id: titleId, class: "dialog-title", text: title }),
        h("p", { class: "dialog-message", text: message }),
        h("div", { class: "dialog-actions" }, cancel, confirm),
      ),
    );
    cancel.addEventListener("click", () => dialog.close("cancel"));

    // Native modal dialogs make the rest of the page inert; aria-hidden says
    // the same to older assistive technology (and to tools that query roles).
    // The announcer stays exposed so status changes are still heard.
    const background = [...document.body.children].filter((el) => el.id !== "announcer");
    background.forEach((el) => el.setAttribute("aria-hidden", "true"));
    const onAbort = () => dialog.close("cancel");
    signal?.addEventListener("abort", onAbort, { once: true });
    dialog.addEventListener("close", () => {
      signal?.removeEventListener("abort", onAbort);
      background.forEach((el) => el.removeAttribute("aria-hidden"));
      dialog.remove();
      resolve(dialog.returnValue === "confirm");
    });

    document.body.append(dialog);
    dialog.showModal();
    // Start on the safe choice.
    cancel.focus();
  });
}

/**
 * An AbortController that also aborts when `parent` does — e.g. one per
 * library card, ended when the card is removed or the whole view goes away.
 */
export function childController(parent) {
  const controller = new AbortController();
  if (parent.aborted) controller.abort();
  else parent.addEventListener("abort", () => controller.abort(), { once: true, signal: controller.signal });
  return controller;
}

/** Move focus to a view's main heading (it carries tabindex="-1"). */
export function focusHeading(root) {
  const heading = root.querySelector("h1");
  heading?.focus({ preventScroll: false });
}

/** setTimeout that is cancelled when the signal aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
