/**
 * Sign in, sign up and confirm — one form at a time.
 *
 *   sign in   POST /auth/login   {email, password} → tokens
 *   sign up   POST /auth/signup  {email, password} → 201
 *             then, when config.needsConfirmation, POST /auth/confirm {email, code};
 *             then signs in with the password just typed (kept in memory only)
 *   confirm   also reached from sign-in: its "Enter a confirmation code" link
 *             (when config.needsConfirmation), or a sign-in answered 403
 *             "not_confirmed" (the code was never entered)
 */

import { h, icon } from "../ui.js";

const SELLING_POINTS = [
  "Uploads go straight to storage — fast, even for big files",
  "Encoded to 720p H.264 with your watermark",
  "An email the moment it’s ready",
];

/**
 * @param {HTMLElement} root
 * @param {object} ctx
 * @param {import("../api.js").ApiClient} ctx.api
 * @param {object} ctx.config
 * @param {(tokens: object, email: string) => void} ctx.onSignedIn
 * @param {string} [ctx.notice] shown above the form, e.g. "Your session has expired…"
 * @param {boolean} [ctx.autofocus]
 */
export function mountAuth(root, ctx) {
  const { api, config, onSignedIn } = ctx;
  // Shared between the forms so switching keeps what was typed.
  const state = { mode: "signin", email: "", password: "" };

  const shell = h("div", { class: "auth" });
  root.replaceChildren(
    h(
      "div",
      { class: "auth-layout" },
      h(
        "div",
        { class: "auth-intro" },
        h("p", { class: "eyebrow" }, "Vidline"),
        h("p", { class: "auth-pitch" }, "Upload once. Watch anywhere."),
        h(
          "ul",
          { class: "auth-points" },
          SELLING_POINTS.map((text) => h("li", {}, icon("check"), text)),
        ),
      ),
      shell,
    ),
  );

  show("signin", ctx.notice);
  if (ctx.autofocus !== false) focusFirstField();

  function show(mode, notice = "") {
    state.mode = mode;
    const form = mode === "signin" ? signInForm() : mode === "signup" ? signUpForm() : confirmForm();
    shell.replaceChildren(form.element);
    document.title = `${form.title} · Vidline`;
    if (notice) form.alert.textContent = notice;
  }

  function switchTo(mode, notice) {
    show(mode, notice);
    focusFirstField();
  }

  /** Focus the first field still to fill in (the email may be known already). */
  function focusFirstField() {
    const inputs = [...shell.querySelectorAll("input")];
    (inputs.find((input) => !input.value) ?? inputs[0])?.focus();
  }

  /** Run a form's request with the button busy; API messages go to the alert. */
  async function submitting(form, button, alert, work) {
    if (!form.reportValidity()) return;
    alert.textContent = "";
    button.disabled = true;
    button.classList.add("is-busy");
    try {
      await work();
    } catch (error) {
      // ApiError messages are written for people; anything else is a bug.
      alert.textContent = error.name === "ApiError" ? error.message : "Something went wrong. Please try again.";
      if (error.name !== "ApiError") console.error(error);
    } finally {
      button.disabled = false;
      button.classList.remove("is-busy");
    }
  }

  async function signIn(email, password) {
    let tokens;
    try {
      tokens = await api.post("/auth/login", { email, password }, { auth: false });
    } catch (error) {
      // Signed up but never confirmed: ask for the code, keeping what was typed.
      if (error.code === "not_confirmed") return switchTo("confirm", error.message);
      throw error;
    }
    state.password = "";
    onSignedIn(tokens, email);
  }

  function signInForm() {
    const f = formParts("signin", "Sign in", "Welcome back. Sign in to your videos.");
    f.form.append(
      emailField(f.id, state),
      passwordField(f.id, state, "current-password"),
      f.alert,
      f.submit,
      h("p", { class: "auth-switch" }, "New to Vidline? ", linkButton("Create an account", () => switchTo("signup"))),
      config.needsConfirmation
        ? h("p", { class: "auth-switch" }, "Got a code by email? ", linkButton("Enter a confirmation code", () => switchTo("confirm")))
        : null,
    );
    f.form.addEventListener("submit", (event) => {
      event.preventDefault();
      submitting(f.form, f.submit, f.alert, () => signIn(state.email, state.password));
    });
    return f;
  }

  function signUpForm() {
    const f = formParts("signup", "Sign up", "Create your account — it takes a few seconds.", "Create your account");
    f.form.append(
      emailField(f.id, state),
      passwordField(f.id, state, "new-password", "At least 8 characters, with upper and lower case letters, a number and a symbol."),
      f.alert,
      f.submit,
      h("p", { class: "auth-switch" }, linkButton("I already have an account", () => switchTo("signin"))),
    );
    f.form.addEventListener("submit", (event) => {
      event.preventDefault();
      submitting(f.form, f.submit, f.alert, async () => {
        await api.post("/auth/signup", { email: state.email, password: state.password }, { auth: false });
        if (config.needsConfirmation) switchTo("confirm");
        else await signIn(state.email, state.password);
      });
    });
    return f;
  }

  function confirmForm() {
    const intro = state.email
      ? `We sent a confirmation code to ${state.email}. Enter it below.`
      : "Enter your email and the confirmation code we sent you.";
    const f = formParts("confirm", "Confirm", intro, "Confirm your account");
    const code = h("input", {
      id: `${f.id}-code`,
      class: "input",
      name: "code",
      required: true,
      autocomplete: "one-time-code",
      inputmode: "numeric",
    });
    // Codes get lost and expire (after a day): the API emails a new one.
    const sent = h("p", { class: "auth-hint", role: "status" });
    const resend = linkButton("Send a new code", async () => {
      if (!state.email) return f.form.reportValidity();
      f.alert.textContent = sent.textContent = "";
      try {
        await api.post("/auth/resend", { email: state.email }, { auth: false });
        sent.textContent = `If ${state.email} is waiting for confirmation, we sent it a new code.`;
      } catch (error) {
        f.alert.textContent = error.name === "ApiError" ? error.message : "Something went wrong. Please try again.";
      }
    });
    f.form.append(
      // Asked here too: coming from sign-in, the email may not be known yet.
      emailField(f.id, state),
      h("div", { class: "field" }, h("label", { for: code.id }, "Confirmation code"), code),
      f.alert,
      sent,
      f.submit,
      h("p", { class: "auth-switch" }, "Lost the code? ", resend),
      h("p", { class: "auth-switch" }, linkButton("I already have an account", () => switchTo("signin"))),
    );
    f.form.addEventListener("submit", (event) => {
      event.preventDefault();
      submitting(f.form, f.submit, f.alert, async () => {
        await api.post("/auth/confirm", { email: state.email, code: code.value.trim() }, { auth: false });
        if (state.password) await signIn(state.email, state.password);
        else switchTo("signin", "Your account is confirmed. Sign in to continue.");
      });
    });
    return f;
  }
}

/** The parts every auth form has: heading, intro, alert region, submit button. */
function formParts(id, submitLabel, intro, heading = submitLabel) {
  const alert = h("div", { class: "alert alert-error", role: "alert", id: `${id}-alert` });
  const spinner = h("span", { class: "spinner", "aria-hidden": "true" });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, spinner, submitLabel);
  const form = h(
    "form",
    { class: "panel auth-form", novalidate: true, "aria-labelledby": `${id}-heading` },
    h("h1", { id: `${id}-heading`, tabindex: "-1" }, heading),
    h("p", { class: "auth-lede" }, intro),
  );
  return { id, form, alert, submit, element: form, title: heading };
}

function emailField(formId, state) {
  const input = h("input", {
    id: `${formId}-email`,
    class: "input",
    type: "email",
    name: "email",
    autocomplete: "email",
    required: true,
    value: state.email,
    onInput: (event) => (state.email = event.target.value.trim()),
  });
  return h("div", { class: "field" }, h("label", { for: input.id }, "Email"), input);
}

function passwordField(formId, state, autocomplete, hint) {
  const hintId = hint ? `${formId}-password-hint` : null;
  const input = h("input", {
    id: `${formId}-password`,
    class: "input",
    type: "password",
    name: "password",
    autocomplete,
    required: true,
    value: state.password,
    "aria-describedby": hintId,
    onInput: (event) => (state.password = event.target.value),
  });
  return h(
    "div",
    { class: "field" },
    h("label", { for: input.id }, "Password"),
    input,
    hint ? h("p", { class: "field-hint", id: hintId }, hint) : null,
  );
}

function linkButton(text, onClick) {
  return h("button", { type: "button", class: "link-button", onClick }, text);
}
