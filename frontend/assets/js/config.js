/**
 * Runtime settings, read from /config.json when the app starts.
 *
 * The file is generated per stage by the deploy (and by the local stack), so
 * the same static build runs everywhere. It is fetched with `cache:
 * "no-cache"` so a redeploy that moves the API is picked up on the next load
 * even though the app's own assets are cached for a long time.
 */

const DEFAULTS = {
  stage: "",
  needsConfirmation: false,
  maxUploadBytes: 2 * 1024 ** 3,
  allowedContentTypes: ["video/mp4", "video/quicktime", "video/webm", "video/x-matroska"],
};

export class ConfigError extends Error {
  constructor(message, { cause } = {}) {
    super(message, { cause });
    this.name = "ConfigError";
  }
}

/** Load and check /config.json. Throws ConfigError when it is missing or unusable. */
export async function loadConfig(url = "/config.json") {
  let response;
  try {
    response = await fetch(url, { cache: "no-cache" });
  } catch (error) {
    throw new ConfigError("The settings could not be downloaded.", { cause: error });
  }
  if (!response.ok) {
    throw new ConfigError(`The settings file answered ${response.status}.`);
  }
  let raw;
  try {
    raw = await response.json();
  } catch (error) {
    throw new ConfigError("The settings file is not valid JSON.", { cause: error });
  }
  if (!raw || typeof raw.apiUrl !== "string" || raw.apiUrl === "") {
    throw new ConfigError("The settings file does not name the API (apiUrl).");
  }

  const config = { ...DEFAULTS, ...raw };
  // A trailing slash would double up with the API paths ("/videos").
  config.apiUrl = raw.apiUrl.replace(/\/+$/, "");
  config.maxUploadBytes = Number(config.maxUploadBytes) || DEFAULTS.maxUploadBytes;
  if (!Array.isArray(config.allowedContentTypes) || config.allowedContentTypes.length === 0) {
    config.allowedContentTypes = DEFAULTS.allowedContentTypes;
  }
  config.needsConfirmation = Boolean(config.needsConfirmation);
  return Object.freeze(config);
}
