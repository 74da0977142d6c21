/* The moderation actions (and a reader's Report): small forms that post without JavaScript,
   sent with fetch instead when it runs. */

import { csrfToken, toInt } from "./util.js";
import { _, ngettext, pgettext } from "./i18n.js";

// The JSON the action routes take; without JavaScript the same forms post as they are.
function actionPayload(form) {
  const data = {};
  const el = (name) => form.elements.namedItem(name);
  const reason = el("reason");
  if (reason && "value" in reason) data.reason = reason.value.trim();
  const duration = el("duration");
  if (duration && "value" in duration) data.duration = duration.value === "" ? null : toInt(duration.value, null);
  const ip = el("ip");
  if (ip && "checked" in ip) data.ip = ip.checked;
  const commentId = el("comment_id");
  if (commentId && "value" in commentId) data.comment_id = commentId.value;
  const enabled = el("enabled");
  if (enabled && "value" in enabled) data.enabled = enabled.value === "1";
  return data;
}

// -> {ok, status (0: the server could not be reached), data}
export async function sendAction(form) {
  let res;
  try {
    res = await fetch(form.getAttribute("action"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(actionPayload(form)),
    });
  } catch (e) {
    return { ok: false, status: 0, data: {} };
  }
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  return { ok: res.ok && !(data && data.error), status: res.status, data: data || {} };
}

export function setActionBusy(form, busy) {
  form.dataset.busy = busy ? "1" : "";
  form.setAttribute("aria-busy", busy ? "true" : "false");
  form.querySelectorAll("button").forEach((b) => { b.disabled = busy; });
}

export function showResult(el, text, isError) {
  if (!el) return;
  el.classList.toggle("is-error", !!isError);
  el.textContent = text || "";
}

// The server's own words when it gave any: they say what is wrong (a name that belongs to a
// moderator, an expired form) better than a guess from the status.
export function actionError(outcome, signedOut = _("Your session has ended. Please log in again.")) {
  const err = outcome.data && outcome.data.error;
  if (outcome.status === 0) return _("Could not reach the server. Please try again.");
  if (outcome.status === 401) return signedOut;
  if (err && err.message) return err.message;
  if (outcome.status === 403) return _("Your session has expired. Please reload the page and try again.");
  return _("That did not work. Please try again.");
}

/* Whose comment it is, so that a moderator's ban and unban forms name the reader (the ban form
   is hidden without one), and whether that reader is banned now:
   el: the element carrying data-reader-id / data-banned; scope: where its ban tools are. */
export function setReader(el, scope, readerId) {
  el.dataset.readerId = readerId || "";
  const ban = scope && scope.querySelector('[data-field="ban"]');
  const enc = encodeURIComponent(readerId || "");
  if (ban) {
    const form = ban.querySelector("form[data-action-form]");
    if (form && readerId) form.setAttribute("action", "/api/readers/" + enc + "/ban");
  }
  const unban = scope && scope.querySelector('form[data-action-form="unban"]');
  if (unban && readerId) unban.setAttribute("action", "/api/readers/" + enc + "/unban");
  showBanned(el, scope, el.dataset.banned === "1");
}

// Banned: the "Banned" flag and Lift ban show, Ban author hides; and the other way round.
export function showBanned(el, scope, banned) {
  el.dataset.banned = banned ? "1" : "";
  if (!scope) return;
  const readerId = el.dataset.readerId || "";
  const ban = scope.querySelector('[data-field="ban"]');
  if (ban) {
    ban.hidden = !readerId || banned;
    if (ban.hidden) ban.open = false;
  }
  const flag = scope.querySelector('[data-field="banned"]');
  if (flag) flag.hidden = !readerId || !banned;
  const unban = scope.querySelector('form[data-action-form="unban"]');
  if (unban) unban.hidden = !readerId || !banned;
}

// "for 24 hours" / "for good", from the ban form's duration (minutes) as the moderator chose it.
export function banLength(form) {
  const duration = form.elements.namedItem("duration");
  const minutes = duration && "value" in duration ? toInt(duration.value, 0) : 0;
  if (minutes <= 0) return _("for good");
  if (minutes % 1440 === 0 && minutes > 1440) return ngettext("for {n} day", "for {n} days", minutes / 1440);
  if (minutes % 60 === 0) return ngettext("for {n} hour", "for {n} hours", minutes / 60);
  return ngettext("for {n} minute", "for {n} minutes", minutes);
}

/* A thread's state (open, closed, hidden) on the moderator's buttons of one article: the name
   shown, and every button but the one for the current state. Used by the article page and the desk. */
const THREAD_STATE_NAMES = {
  open: pgettext("thread state", "open"),
  closed: pgettext("thread state", "closed"),
  hidden: pgettext("thread state", "hidden"),
};

export function showThreadState(group, threadState) {
  if (!group) return;
  group.dataset.threadState = threadState;
  const name = group.querySelector('[data-field="state-name"]');
  if (name) name.textContent = THREAD_STATE_NAMES[threadState] || threadState;
  group.querySelectorAll("form[data-to-state]").forEach((form) => {
    form.hidden = form.dataset.toState === threadState;
  });
}
