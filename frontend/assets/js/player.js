/**
 * The video player: the adaptive HLS ladder where the browser can play it,
 * the MP4 otherwise.
 *
 *   hls.js      where the browser has Media Source Extensions (Chrome, Edge,
 *               Firefox, Safari on macOS and recent iPadOS/iOS). Loaded from
 *               our own origin, and only when a stream is played.
 *   native      where hls.js can't run but the <video> plays HLS itself
 *               (older iOS Safari).
 *   mp4         when neither works, or when HLS fails (hls.js gives up, the
 *               native player errors). A video still processing has no MP4
 *               yet; the player then says so and plays the MP4 once it exists.
 *
 * Private media: the API's `hls_url` is the master playlist signed with a
 * CloudFront custom policy that covers every object under the stream's
 * `hls/` prefix. The playlists name their variants and segments with
 * relative URIs, which carry no query, so hls.js adds the master URL's
 * signing parameters (Policy, Signature, Key-Pair-Id) to every request it
 * makes under that prefix. A native player has no such hook: it gets the same
 * three values as CloudFront's signed cookies, scoped to the prefix (this
 * works because the app is served from the CDN's own origin).
 *
 * The <video> carries data-playback="hls.js" | "native" | "mp4" | "none".
 */

import { h } from "./ui.js";

const HLS_MODULE = "../vendor/hls.min.mjs";
const HLS_TYPE = "application/vnd.apple.mpegurl";
const SIGNING_PARAMS = ["Policy", "Signature", "Key-Pair-Id"];
const COOKIE_NAMES = { Policy: "CloudFront-Policy", Signature: "CloudFront-Signature", "Key-Pair-Id": "CloudFront-Key-Pair-Id" };

/**
 * A player for `video` (as the API returns it, with `outputs`). Keep it
 * current with player.update(next): it carries on playing across updates
 * (a video that becomes ready keeps playing) and picks up fresh signatures.
 * Aborting `signal` stops it and every download it started.
 *
 * @param {object} video
 * @param {{signal: AbortSignal}} options
 * @returns {{element: HTMLVideoElement, note: HTMLElement, update: (video: object) => void}}
 *   `note` says why nothing plays, when that happens; place it over the element.
 */
export function createPlayer(video, { signal }) {
  const element = h("video", {
    class: "player-video",
    controls: true,
    playsinline: true,
    preload: "metadata",
    poster: video.outputs?.thumbnail_url ?? null,
    "aria-label": video.title,
  });
  const note = h("p", { class: "player-note", hidden: true });
  let current = video;
  let hls = null;
  let stream = null; // the signed master URL being played, split up (see splitSignedUrl)

  function setMode(mode) {
    element.dataset.playback = mode;
  }

  function showProblem(text) {
    note.textContent = text;
    note.hidden = false;
  }

  /** Play the video's stream, or its MP4; from `position` (seconds), playing on if `playing`. */
  async function start({ position = 0, playing = false } = {}) {
    const hlsUrl = current.outputs?.hls_url;
    if (hlsUrl) {
      stream = splitSignedUrl(hlsUrl);
      if (await startHlsJs(hlsUrl, position)) {
        if (playing) element.play().catch(() => {}); // the browser may want a click first
        return;
      }
      if (signal.aborted) return;
      if (element.canPlayType(HLS_TYPE)) return startNative(hlsUrl, { position, playing });
    }
    playMp4();
  }

  /** Play with hls.js; false when this browser can't (no MSE, or the module didn't load). */
  async function startHlsJs(hlsUrl, position) {
    if (!("MediaSource" in window || "ManagedMediaSource" in window)) return false;
    let Hls;
    try {
      ({ default: Hls } = await import(HLS_MODULE));
    } catch {
      return false;
    }
    if (signal.aborted || !Hls.isSupported()) return false;

    hls = new Hls({
      // Until the video is ready its playlists are EVENT playlists, which
      // hls.js treats as live and would join at the live edge: start at the
      // beginning (or where a restarted stream was).
      startPosition: position,
      // CMAF segments need no transmuxing, so no worker (the ES module build has no inline one).
      enableWorker: false,
      xhrSetup(xhr, url) {
        xhr.open("GET", stream ? stream.sign(url) : url, true);
      },
    });
    let recovering = false;
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return; // hls.js retries those itself
      // A decoding hiccup is worth one recovery; anything else ends HLS here.
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recovering) {
        recovering = true;
        hls.recoverMediaError();
        return;
      }
      stopHlsJs();
      playMp4({ resume: true });
    });
    hls.loadSource(hlsUrl);
    hls.attachMedia(element);
    setMode("hls.js");
    return true;
  }

  function stopHlsJs() {
    hls?.destroy();
    hls = null;
  }

  function startNative(hlsUrl, at) {
    setSignedCookies(stream);
    element.src = hlsUrl;
    setMode("native");
    resumeAt(at);
  }

  /** Play the MP4 (from where HLS stopped, if `resume`), or say why there is nothing to play. */
  function playMp4({ resume = false } = {}) {
    const mp4 = current.outputs?.renditions?.[0]?.url;
    if (!mp4) {
      element.removeAttribute("src");
      element.load(); // let go of the failed stream
      setMode("none");
      showProblem(
        current.status === "ready"
          ? "This video couldn’t be played in this browser."
          : "The stream couldn’t be played. The video will play here once it has finished processing.",
      );
      return;
    }
    const at = { position: element.currentTime, playing: !element.paused };
    note.hidden = true;
    element.src = mp4;
    setMode("mp4");
    if (resume) resumeAt(at);
  }

  /** Once the new source is loaded, go back to where the previous one was. */
  function resumeAt({ position, playing }) {
    if (position <= 0 && !playing) return;
    element.addEventListener(
      "loadedmetadata",
      () => {
        if (position > 0) element.currentTime = position;
        if (playing) element.play().catch(() => {}); // the browser may want a click first
      },
      { once: true },
    );
  }

  // The native player and the MP4 report failures on the element itself.
  element.addEventListener("error", () => {
    const mode = element.dataset.playback;
    if (mode === "native") playMp4({ resume: true });
    else if (mode === "mp4") showProblem("This video couldn’t be played. The link may have expired — reload the page to get a fresh one.");
  });

  function restart() {
    const position = element.currentTime;
    const playing = !element.paused;
    stopHlsJs();
    note.hidden = true;
    start({ position, playing });
  }

  signal.addEventListener(
    "abort",
    () => {
      stopHlsJs();
      element.removeAttribute("src");
      element.load(); // stops any download the element itself started
    },
    { once: true },
  );

  start();

  return {
    element,
    note,
    /** Take the video's latest state: fresher signatures, a poster, the MP4 once it exists. */
    update(next) {
      current = next;
      const outputs = next.outputs ?? {};
      if (outputs.thumbnail_url && !element.getAttribute("poster")) element.poster = outputs.thumbnail_url;
      // A signature renewed by the API replaces the one we add to requests
      // (same stream, same prefix): watching can outlast a URL's lifetime.
      const renewed = outputs.hls_url && stream ? splitSignedUrl(outputs.hls_url) : null;
      if (renewed && renewed.prefix === stream.prefix) {
        stream = renewed;
        if (element.dataset.playback === "native") setSignedCookies(stream);
      } else if (renewed && element.dataset.playback !== "mp4") {
        // Another run's stream: the one playing was from an attempt that was
        // retried, and its files are going. Same element, same place, new stream.
        restart();
        return;
      }
      if (element.dataset.playback === "none" && outputs.renditions?.[0]?.url) playMp4();
    },
  };
}

/**
 * A signed master playlist URL as {prefix, path, params, sign(url)}: `prefix`
 * is the URL up to the playlist's folder, `params` the signing parameters as
 * they appear in the query (kept verbatim: re-encoding could change them), and
 * sign(url) adds them to a URL under the prefix that doesn't carry them yet.
 */
export function splitSignedUrl(signedUrl) {
  const url = new URL(signedUrl, location.href);
  const path = url.pathname.slice(0, url.pathname.lastIndexOf("/") + 1);
  const prefix = url.origin + path;
  const params = url.search
    .slice(1)
    .split("&")
    .filter((pair) => pair.includes("=") && SIGNING_PARAMS.includes(pair.split("=", 1)[0]));
  return {
    prefix,
    path,
    params,
    sign(target) {
      const resolved = new URL(target, signedUrl);
      if (!(resolved.origin + resolved.pathname).startsWith(prefix)) return target;
      const present = new Set(resolved.search.slice(1).split("&").map((pair) => pair.split("=", 1)[0]));
      const missing = params.filter((pair) => !present.has(pair.split("=", 1)[0]));
      if (missing.length === 0) return resolved.href;
      const search = resolved.search.length > 1 ? `${resolved.search}&` : "?";
      return `${resolved.origin}${resolved.pathname}${search}${missing.join("&")}${resolved.hash}`;
    },
  };
}

/**
 * The stream's signature as CloudFront signed cookies, for a native player.
 * Path-scoped to the stream's prefix so it opens nothing else; Secure on
 * https (it would be refused over plain http, as on the local stack).
 * A cookie can only be set for this page's host, so this works when the app
 * and the media share the CDN's origin, as Vidline deploys them.
 */
function setSignedCookies(stream) {
  if (!stream || new URL(stream.prefix).hostname !== location.hostname) return;
  const secure = location.protocol === "https:" ? "; Secure" : "";
  for (const pair of stream.params) {
    const at = pair.indexOf("=");
    const [name, value] = [pair.slice(0, at), pair.slice(at + 1)];
    document.cookie = `${COOKIE_NAMES[name]}=${value}; Path=${stream.path}; SameSite=Strict${secure}`;
  }
}
