/* Writing and posting: the comment and reply forms.
 *
 *   - posts go over the socket (ack/error by ref), falling back to fetch under the same ref
 *     (the server deduplicates by ref); when neither reaches the server the reader stays on
 *     the page with their text and is told so;
 *   - the body's length is counted as the server counts it (characters a person sees) with a
 *     counter near the limit, and a comment over it is refused here, clearly, before sending;
 *     an error about what the reader typed goes away once they change it;
 *   - drafts survive a reload (sessionStorage), name and "about" are remembered (localStorage);
 *   - Ctrl/Cmd+Enter posts, Escape closes a reply form;
 *   - when the thread closes (or is hidden), a form holding text stays with its text and says
 *     it was not posted; the others go (style.css), and come back when it reopens.
 */

import { state } from "./state.js";
import { csrfToken, field, graphemeCount, local, newRef, session, toInt } from "../lib/util.js";
import { _, ngettext } from "../lib/i18n.js";
import { commentEl, ensureForm, focusComment, part, placeComment } from "./thread.js";
import { noteOwnComment } from "./mine.js";

const ACK_TIMEOUT_MS = 8000;
const MAX_FRAME_BYTES = 64 * 1024 - 1024; // the server's cap, less room for the JSON envelope
const DEFAULT_LIMIT = 5000;
const COUNTER_FROM = 0.9; // the counter shows from 90 % of the limit
const KEY_NAME = "backchannel.name";
const KEY_ABOUT = "backchannel.about";
const draftsKey = () => "backchannel.drafts." + state.slug;
const CLOSED_TEXT = _("Comments on this article are closed, so this was not posted. Your text is kept here so you can copy it.");


// --- identity and drafts ----------------------------------------------------------------

function prefillIdentity(scope) {
  const name = local.get(KEY_NAME) || "";
  const about = local.get(KEY_ABOUT) || "";
  const forms = scope.matches && scope.matches("form[data-comment-form]")
    ? [scope]
    : scope.querySelectorAll("form[data-comment-form]");
  forms.forEach((form) => {
    const n = field(form, "name");
    const a = field(form, "about");
    if (n && !n.value && name) n.value = name;
    if (a && !a.value && about) a.value = about;
  });
}

function rememberIdentity(name, about) {
  local.set(KEY_NAME, name);
  if (about) local.set(KEY_ABOUT, about);
  else local.remove(KEY_ABOUT);
  // Keep every other form on the page in step with what the reader now calls themselves.
  state.root.querySelectorAll("form[data-comment-form]").forEach((form) => {
    const n = field(form, "name");
    const a = field(form, "about");
    if (n && !n.value) n.value = name;
    if (a && !a.value) a.value = about;
  });
}

function loadDrafts() {
  try { return JSON.parse(session.get(draftsKey()) || "{}") || {}; } catch (e) { return {}; }
}

function saveDraft(parent, text) {
  const drafts = loadDrafts();
  if (text && text.trim()) drafts[parent || ""] = text;
  else delete drafts[parent || ""];
  if (Object.keys(drafts).length) session.set(draftsKey(), JSON.stringify(drafts));
  else session.remove(draftsKey());
}

function clearDraft(parent) {
  saveDraft(parent, "");
}

export function saveAllDrafts() {
  state.root.querySelectorAll("form[data-comment-form]").forEach((form) => {
    const body = field(form, "body");
    if (body && body.value.trim()) saveDraft(form.dataset.parent || "", body.value);
  });
}

function restoreDrafts() {
  for (const [parent, text] of Object.entries(loadDrafts())) {
    let form = null;
    if (!parent) form = state.root.querySelector(".composer form[data-comment-form]");
    else {
      const li = commentEl(parent);
      const details = li && part(li, "reply");
      form = details ? ensureForm(details) : null;
    }
    const body = form && field(form, "body");
    if (!body) continue;
    if (!body.value) body.value = text;
    updateLength(form);
    const details = form.closest("details.reply");
    if (details && !details.hidden) details.open = true;
  }
}

// A reply form cloned from the template's blank comment: it answers comment id, starts empty.
export function prepareReplyForm(form, id) {
  form.dataset.parent = id;
  const parentInput = field(form, "parent");
  if (parentInput) parentInput.value = id;
  const body = field(form, "body");
  if (body) body.value = "";
  showFormError(form, "");
  updateLength(form);
  prefillIdentity(form);
}

// --- messages under the form ------------------------------------------------------------

/* `fixedBy`: the field whose next edit makes the message stale ("body", "name"), or "" for a
   message only the next attempt answers (rate limits, a ban, an unreachable server). */
function showFormError(form, text, fixedBy = "") {
  const el = form.querySelector("[data-form-error]");
  if (!el) return;
  el.classList.remove("is-note");
  el.textContent = text || "";
  form.dataset.errorFixedBy = text ? fixedBy : "";
}

function showFormNote(form, text) {
  const el = form.querySelector("[data-form-error]");
  if (!el) return;
  el.classList.add("is-note");
  el.textContent = text;
  form.dataset.errorFixedBy = "";
}

// --- length ------------------------------------------------------------------------------

function limitOf(body) {
  return toInt(body.dataset.maxChars, DEFAULT_LIMIT);
}

function overLimitText(n, limit) {
  return _("Your comment is {n} characters long, {over} over the limit of {limit}. Please shorten it before posting.",
    { n, over: n - limit, limit });
}

// Counts what the reader typed (or pasted) and says so near and over the limit. Returns the count.
function updateLength(form) {
  const body = field(form, "body");
  if (!body) return 0;
  const limit = limitOf(body);
  const n = graphemeCount(body.value);
  const counter = form.querySelector("[data-counter]");
  const over = n > limit;
  if (counter) {
    counter.hidden = n < limit * COUNTER_FROM;
    counter.classList.toggle("is-over", over);
    // Emptied while hidden: the textarea's description (aria-describedby) reads it.
    counter.textContent = counter.hidden ? ""
      : over ? _("{n} / {limit} characters — {over} too many", { n, limit, over: n - limit })
      : _("{n} / {limit} characters", { n, limit });
  }
  body.setAttribute("aria-invalid", over ? "true" : "false");
  const error = form.querySelector("[data-form-error]");
  const showingLength = form.dataset.errorFixedBy === "length";
  if (over && (!error || !error.textContent || showingLength)) {
    // Said at once (a paste can overshoot by thousands), and again as it changes.
    showFormError(form, overLimitText(n, limit), "length");
  } else if (!over && showingLength) {
    showFormError(form, "");
  }
  return n;
}

// An edit to the field an error was about makes that error stale.
function onFieldInput(form, name) {
  const fixedBy = form.dataset.errorFixedBy || "";
  if (name === "body") updateLength(form);
  if (fixedBy !== name) return;
  const el = field(form, name);
  if (el && el.value.trim()) showFormError(form, "");
}

// --- posting -----------------------------------------------------------------------------

function readForm(form) {
  const get = (n) => { const el = field(form, n); return el ? el.value : ""; };
  return {
    name: get("name").trim(),
    about: get("about").trim(),
    body: get("body"),
    parent: get("parent") || "",
  };
}

function setBusy(form, busy) {
  const button = form.querySelector("[data-submit]") || form.querySelector('[type="submit"]');
  form.dataset.busy = busy ? "1" : "";
  form.setAttribute("aria-busy", busy ? "true" : "false");
  if (!button) return;
  if (busy) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.textContent = _("Posting…");
    button.disabled = true;
  } else {
    if (button.dataset.label) button.textContent = button.dataset.label;
    button.disabled = false;
  }
}

function onSubmit(event) {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.matches("[data-comment-form]")) return;
  event.preventDefault();
  if (form.dataset.busy === "1") return;
  if (state.threadState !== "open") { // Ctrl+Enter in a form kept after the thread closed
    showFormNote(form, CLOSED_TEXT);
    return;
  }
  const payload = readForm(form);
  const bodyEl = field(form, "body");
  const nameEl = field(form, "name");
  if (!payload.body.trim()) {
    showFormError(form, _("Please write your comment first."), "body");
    if (bodyEl) bodyEl.focus();
    return;
  }
  const length = bodyEl ? graphemeCount(payload.body) : 0;
  if (bodyEl && length > limitOf(bodyEl)) {
    showFormError(form, overLimitText(length, limitOf(bodyEl)), "length");
    bodyEl.focus();
    return;
  }
  if (!payload.name) {
    showFormError(form, _("Please add your name."), "name");
    if (nameEl) nameEl.focus();
    return;
  }
  rememberIdentity(payload.name, payload.about);
  showFormError(form, "");
  setBusy(form, true);
  const post = { ref: newRef(), form, payload, timer: 0, sent: false, viaHttp: false, done: false };
  state.posts.set(post.ref, post);
  const socket = state.socket;
  if (socket && socket.ready) {
    sendPost(post, socket);
    post.timer = setTimeout(() => fallback(post), ACK_TIMEOUT_MS);
  } else {
    fallback(post);
  }
}

function sendPost(post, socket) {
  const frame = JSON.stringify({
    type: "post",
    ref: post.ref,
    body: post.payload.body,
    parent: post.payload.parent || null,
    name: post.payload.name,
    about: post.payload.about || null,
  });
  // The server closes the socket on frames over 64 KiB (a long comment of multi-byte emoji
  // can be that big while within 5,000 characters): such a post goes over HTTP instead.
  if (new TextEncoder().encode(frame).length > MAX_FRAME_BYTES) {
    fallback(post);
    return;
  }
  try {
    socket.send(frame);
    post.sent = true;
  } catch (e) {
    fallback(post);
  }
}

async function fallback(post) {
  if (post.done || post.viaHttp) return;
  post.viaHttp = true;
  clearTimeout(post.timer);
  let res;
  try {
    res = await fetch(state.apiUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-CSRF-Token": csrfToken(),
      },
      body: JSON.stringify({
        name: post.payload.name,
        about: post.payload.about || null,
        body: post.payload.body,
        parent: post.payload.parent || null,
        ref: post.ref,
      }),
    });
  } catch (e) {
    // The server (or the network) is down. A plain form post would only reach the browser's
    // own error page and lose the page: keep the reader here, with their text.
    fail(post, { code: navigator.onLine === false ? "offline" : "unreachable" });
    return;
  }
  if (post.done) return; // the socket's ack won the race
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (post.done) return;
  if (res.ok && data && data.comment) {
    succeed(post, data.comment.id, data.comment, data.comment.status === "pending");
  } else if (data && data.error) {
    fail(post, data.error);
  } else {
    // Not our server's answer (a proxy's error page while it restarts, say).
    fail(post, { code: "unreachable" });
  }
}

function succeed(post, id, comment, pending) {
  if (post.done) return;
  post.done = true;
  clearTimeout(post.timer);
  state.posts.delete(post.ref);
  const form = post.form;
  setBusy(form, false);
  const bodyEl = field(form, "body");
  if (bodyEl) bodyEl.value = "";
  updateLength(form);
  clearDraft(post.payload.parent);

  if (comment && comment.id && !commentEl(comment.id)) placeComment(comment, true);
  if (!pending) noteOwnComment(id, post.payload.body);
  const li = commentEl(id);
  if (pending && !li) {
    // Held for moderation and not shown to us: say so where the reader is looking.
    showFormNote(form, _("Thanks — your comment will appear once a moderator has approved it."));
    return;
  }
  showFormError(form, "");
  const details = form.closest("details.reply");
  if (details) details.open = false;
  if (li) focusComment(li);
  else if (id) state.focusOnArrival = id;
}

// The field whose edit answers a refusal; "" when only trying again later does.
const FIXED_BY = { empty: "body", too_long: "body", forbidden: "name" };

function fail(post, error) {
  if (post.done) return;
  post.done = true;
  clearTimeout(post.timer);
  state.posts.delete(post.ref);
  setBusy(post.form, false);
  showFormError(post.form, friendlyError(error), FIXED_BY[error && error.code] || "");
}

export function onAck(msg) {
  const post = msg.ref ? state.posts.get(msg.ref) : null;
  if (!post) return;
  const pending = msg.seq === null || msg.seq === undefined || (msg.comment && msg.comment.status === "pending");
  succeed(post, msg.id, msg.comment || null, pending);
}

// An error frame answering one of our posts: true when it did.
export function onPostError(msg) {
  const post = msg.ref ? state.posts.get(msg.ref) : null;
  if (!post) return false;
  fail(post, msg);
  return true;
}

// A post sent on a socket that died may or may not have been stored: let HTTP retry it under
// the same ref (the server deduplicates by ref).
export function onSocketLost() {
  for (const post of state.posts.values()) {
    if (post.sent && !post.done) fallback(post);
  }
}

function friendlyError(err) {
  const code = err && err.code;
  const message = (err && err.message) || "";
  switch (code) {
    case "empty": return message || _("Please write your comment first.");
    case "too_long": return message || _("That is longer than we can take. Please shorten it.");
    case "invalid_message": return _("Something went wrong sending that. Please try again.");
    case "not_found": return _("The comment you are replying to is no longer available.");
    case "rate_limited": {
      const s = toInt(err.retry_after, 0);
      return s > 0
        ? ngettext("You are posting quickly. Please wait {n} second and try again.",
          "You are posting quickly. Please wait {n} seconds and try again.", s)
        : _("You are posting quickly. Please wait a moment and try again.");
    }
    case "banned": return _("You can no longer post comments here.");
    case "closed": return CLOSED_TEXT;
    // The server says which: a reserved name, an expired form, …
    case "forbidden": return message || _("Your session has expired. Please reload the page and try again.");
    case "unavailable": return _("Comments are briefly unavailable. Your text is kept; please try again in a moment.");
    case "offline": return _("You seem to be offline. Your text is kept; please try again when you are connected.");
    case "unreachable": return _("Could not reach the server, so your comment was not posted. Your text is kept here; please try again in a moment.");
    default: return message || _("Something went wrong. Please try again.");
  }
}

// --- the thread closing and reopening ---------------------------------------------------------

/* Every form holding what the reader wrote stays on the page (data-kept on its composer or
   reply box) while the thread is not open, saying so; reopened, the forms are as before. */
export function keepWrittenForms(threadState) {
  state.root.querySelectorAll("form[data-comment-form]").forEach((form) => {
    const holder = form.closest(".composer, details.reply");
    if (!holder) return;
    if (threadState === "open") {
      holder.removeAttribute("data-kept");
      if (form.dataset.closedNote === "1") showFormError(form, "");
      form.dataset.closedNote = "";
      return;
    }
    const body = field(form, "body");
    if (!body || !body.value.trim()) return;
    holder.setAttribute("data-kept", "");
    showFormNote(form, CLOSED_TEXT);
    form.dataset.closedNote = "1";
  });
}

// --- keyboard ------------------------------------------------------------------------------

function onKeydown(event) {
  if (event.defaultPrevented || event.isComposing) return;
  const target = event.target;
  const form = target && target.closest ? target.closest("form[data-comment-form]") : null;
  if (form && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    form.requestSubmit();
    return;
  }
  if (event.key === "Escape") {
    const details = target && target.closest ? target.closest("details.reply[open]") : null;
    if (!details) return;
    // The draft is kept (saved as it was typed); the reader lands back on "Reply".
    event.preventDefault();
    details.open = false;
    const summary = details.querySelector("summary");
    if (summary) summary.focus();
  }
}

// --- start -------------------------------------------------------------------------------

export function startComposer() {
  const root = state.root;
  root.addEventListener("submit", onSubmit);
  root.addEventListener("keydown", onKeydown);
  root.addEventListener("input", (event) => {
    const el = event.target;
    const form = el && el.form;
    if (!form || !form.matches("[data-comment-form]")) return;
    if (el instanceof HTMLTextAreaElement && el.name === "body") saveDraft(form.dataset.parent || "", el.value);
    onFieldInput(form, el.name);
  });
  // Opening a reply or report form builds it if the page left it out, and puts the cursor
  // where the reader is about to type.
  root.addEventListener("toggle", (event) => {
    const details = event.target;
    if (!(details instanceof HTMLDetailsElement) || !details.open) return;
    if (!details.matches("details.reply, details.report")) return;
    const form = ensureForm(details);
    if (!form) return;
    const fromSummary = document.activeElement === details.querySelector("summary");
    if (details.matches("details.report")) {
      const reason = field(form, "reason");
      if (reason && fromSummary) reason.focus();
      return;
    }
    prefillIdentity(form);
    const body = field(form, "body");
    if (body && fromSummary) body.focus();
  }, true);
  prefillIdentity(root);
  restoreDrafts();
  root.querySelectorAll("form[data-comment-form]").forEach(updateLength);
  if (state.threadState !== "open") keepWrittenForms(state.threadState); // a draft kept from before
}
