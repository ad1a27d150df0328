/**
 * The upload panel: a drop zone with a "Choose video" picker, the queue of
 * chosen files (title, progress, speed, Cancel; Retry when one failed) and
 * the "Upload" button. Files dropped anywhere on the page are taken too.
 * The queue itself (queue.js) outlives this panel.
 */

import { acceptAttribute, describeTypes } from "../files.js";
import { formatBytes, formatSpeed } from "../format.js";
import { h, icon } from "../ui.js";

/**
 * @param {object} ctx
 * @param {import("../queue.js").UploadQueue} ctx.queue
 * @param {object} ctx.config
 * @param {AbortSignal} ctx.signal  ends the panel's listeners
 * @returns {{element: HTMLElement}}
 */
export function createUploader({ queue, config, signal }) {
  const input = h("input", {
    type: "file",
    id: "file-input",
    class: "file-input",
    multiple: true,
    accept: acceptAttribute(config.allowedContentTypes),
  });
  const alert = h("div", { class: "alert alert-error", role: "alert" });
  const list = h("ul", { class: "queue", "aria-label": "Files to upload" });
  const uploadButton = h("button", { type: "button", class: "btn btn-primary" }, icon("upload"), "Upload");
  const summary = h("p", { class: "queue-summary" });

  const dropzone = h(
    "div",
    { class: "dropzone" },
    h("span", { class: "dropzone-icon" }, icon("upload")),
    h(
      "div",
      { class: "dropzone-text" },
      h("p", { class: "dropzone-title" }, "Drag and drop videos here"),
      h(
        "p",
        { class: "dropzone-hint" },
        `${describeTypes(config.allowedContentTypes)} · up to ${formatBytes(config.maxUploadBytes)} each`,
      ),
    ),
    input,
    h("label", { for: "file-input", class: "btn btn-secondary" }, "Choose video"),
  );

  const element = h(
    "section",
    { class: "uploader", "aria-labelledby": "upload-heading" },
    h("h2", { id: "upload-heading", class: "visually-hidden" }, "Upload videos"),
    dropzone,
    alert,
    list,
    h("div", { class: "queue-actions" }, summary, uploadButton),
  );

  function addFiles(files) {
    const { rejected } = queue.add([...files]);
    alert.replaceChildren(...rejected.map((reason) => h("p", {}, icon("alert"), reason)));
  }

  input.addEventListener("change", () => {
    addFiles(input.files);
    // Reset so choosing the same file again fires "change" again.
    input.value = "";
  });
  uploadButton.addEventListener("click", () => {
    alert.replaceChildren();
    queue.start();
  });

  // Files dragged over the page light up the drop zone, and a drop anywhere
  // is taken, so a near miss still works. (main.js stops the browser from
  // opening a file dropped on the page.) The window sees every drop, so the
  // highlight always goes off.
  let dragDepth = 0; // dragenter/dragleave pairs: child elements fire them too
  const hasFiles = (event) => event.dataTransfer?.types?.includes("Files");
  const setDragging = (on) => element.classList.toggle("is-dragging", on);
  const endDrag = () => {
    dragDepth = 0;
    setDragging(false);
  };
  dropzone.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault(); // "this is a drop target"
    event.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener(
    "dragenter",
    (event) => {
      if (!hasFiles(event)) return;
      dragDepth += 1;
      setDragging(true);
    },
    { signal },
  );
  window.addEventListener(
    "dragleave",
    (event) => {
      if (!hasFiles(event)) return;
      dragDepth = Math.max(0, dragDepth - 1);
      if (dragDepth === 0) setDragging(false);
    },
    { signal },
  );
  window.addEventListener(
    "drop",
    (event) => {
      endDrag();
      if (!hasFiles(event)) return;
      event.preventDefault();
      addFiles(event.dataTransfer.files);
    },
    { signal },
  );
  window.addEventListener("dragend", endDrag, { signal });

  // One row per queue item, updated in place so typing in a title field or
  // focusing Cancel is not disturbed by progress events. A row is rebuilt
  // only when its kind changes (creating → sending is one "active" row).
  const rows = new Map();
  function render() {
    const ids = new Set(queue.items.map((item) => item.id));
    for (const [id, row] of rows) {
      if (!ids.has(id)) {
        row.element.remove();
        rows.delete(id);
      }
    }
    for (const item of queue.items) {
      let row = rows.get(item.id);
      if (!row || row.kind !== rowKind(item)) {
        const fresh = renderRow(item, queue);
        if (row) {
          const hadFocus = row.element.contains(document.activeElement);
          row.element.replaceWith(fresh.element);
          // e.g. Retry → Cancel: keep keyboard users on the row's button.
          if (hadFocus) fresh.element.querySelector("button")?.focus();
        } else {
          list.append(fresh.element);
        }
        row = fresh;
        rows.set(item.id, row);
      }
      row.update?.(item);
    }
    // Keep the DOM order the queue's order, moving only rows out of place:
    // moving an element takes the focus away from it.
    queue.items.forEach((item, index) => {
      const element = rows.get(item.id).element;
      if (list.children[index] !== element) list.insertBefore(element, list.children[index] ?? null);
    });

    const pending = queue.pendingCount;
    uploadButton.disabled = pending === 0;
    summary.textContent = queue.running
      ? `Uploading… ${pending ? `${pending} more waiting` : ""}`.trim()
      : pending
        ? `${pending} ${pending === 1 ? "file" : "files"} ready to upload`
        : "";
    element.classList.toggle("has-items", queue.items.length > 0);
  }

  queue.addEventListener("change", render, { signal });
  // The Cancel button just went away with its row: put focus somewhere useful.
  // (main.js announces the queue's events, on every page.)
  queue.addEventListener("cancelled", () => input.focus(), { signal });
  render();

  return { element };
}

/** Items being created or sent share one row, so focus on Cancel survives. */
function rowKind(item) {
  if (item.state === "pending" && item.resume) return "resumable";
  return item.state === "creating" || item.state === "sending" ? "active" : item.state;
}

/** A queue row for the item's current state: {element, kind, update?}. */
function renderRow(item, queue) {
  const kind = rowKind(item);
  const meta = `${item.file.name} · ${formatBytes(item.file.size)}`;

  if (kind === "pending") {
    const titleId = `queue-title-${item.id}`;
    const title = h("input", {
      id: titleId,
      class: "input input-sm",
      type: "text",
      value: item.title,
      maxlength: 200,
      onInput: (event) => queue.setTitle(item.id, event.target.value),
    });
    const element = h(
      "li",
      { class: "queue-item" },
      h("span", { class: "queue-icon" }, icon("file")),
      h(
        "div",
        { class: "queue-main" },
        h("label", { for: titleId, class: "visually-hidden" }, `Title for “${item.file.name}”`),
        title,
        h("p", { class: "queue-meta" }, meta),
      ),
      h(
        "button",
        {
          type: "button",
          class: "btn btn-icon",
          "aria-label": `Remove “${item.file.name}”`,
          title: "Remove",
          onClick: () => queue.remove(item.id),
        },
        icon("x"),
      ),
    );
    return { element, kind };
  }

  if (kind === "resumable") {
    // The same file's earlier upload stopped part-way (a reload, a crash):
    // offer to go on with it, or to start again.
    const element = h(
      "li",
      { class: "queue-item is-resumable" },
      h("span", { class: "queue-icon" }, icon("clock")),
      h(
        "div",
        { class: "queue-main" },
        h("p", { class: "queue-title" }, item.title),
        h("p", { class: "queue-meta" }, meta),
        h("p", { class: "queue-note" }, "This file’s upload was interrupted. Resume it where it stopped, or start over."),
      ),
      h(
        "div",
        { class: "queue-buttons" },
        h("button", { type: "button", class: "btn btn-primary btn-sm", onClick: () => queue.start() }, "Resume upload"),
        h("button", { type: "button", class: "btn btn-ghost btn-sm", onClick: () => queue.startOver(item.id) }, "Start over"),
      ),
    );
    return { element, kind };
  }

  if (item.state === "failed") {
    const element = h(
      "li",
      { class: "queue-item is-failed" },
      h("span", { class: "queue-icon" }, icon("alert")),
      h(
        "div",
        { class: "queue-main" },
        h("p", { class: "queue-title" }, item.title),
        h("p", { class: "queue-error" }, item.error),
      ),
      h(
        "div",
        { class: "queue-buttons" },
        h("button", { type: "button", class: "btn btn-secondary btn-sm", onClick: () => queue.retry(item.id) }, "Retry"),
        h("button", { type: "button", class: "btn btn-ghost btn-sm", onClick: () => queue.remove(item.id) }, "Dismiss"),
      ),
    );
    return { element, kind };
  }

  // "creating" (asking the API for an upload link) or "sending".
  const title = h("p", { class: "queue-title" });
  const progress = h("progress", { class: "progress", max: 100 });
  const numbers = h("p", { class: "queue-meta" });
  const element = h(
    "li",
    { class: "queue-item is-active" },
    h("span", { class: "queue-icon" }, icon("upload")),
    h("div", { class: "queue-main" }, title, progress, numbers),
    h("button", { type: "button", class: "btn btn-secondary btn-sm", onClick: () => queue.cancel(item.id) }, "Cancel"),
  );
  const update = (current) => {
    // The title is final (trimmed) once the video exists.
    title.textContent = current.title;
    progress.setAttribute("aria-label", `Uploading “${current.title}”`);
    if (current.state === "creating") {
      // An indeterminate bar (no value) until bytes start moving.
      progress.removeAttribute("value");
      numbers.textContent = `Preparing… · ${meta}`;
      return;
    }
    const total = current.total || current.file.size;
    const percent = Math.min(100, Math.floor((current.loaded / total) * 100));
    progress.value = percent;
    const sent = Math.min(current.loaded, current.file.size);
    numbers.textContent = [`${percent}%`, formatSpeed(current.speed), `${formatBytes(sent)} of ${formatBytes(current.file.size)}`]
      .filter(Boolean)
      .join(" · ");
  };
  return { element, kind, update };
}
