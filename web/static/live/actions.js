/* The article page's small action forms, sent with fetch and answered in place: a reader's
   Report; on a moderator's page Remove, Restore, Approve, Ban author, Lift ban, the
   pre-moderation switch, and closing, reopening or hiding the thread. */

import { state } from "./state.js";
import { field, permalink } from "../lib/util.js";
import { _, pgettext } from "../lib/i18n.js";
import { actionError, banLength, sendAction, setActionBusy, showResult } from "../lib/actions.js";
import { cardOf, changeStatus, placeComment, setReaderBanned, setThreadState } from "./thread.js";

const THREAD_STATE_DONE = {
  open: _("Comments are open."),
  closed: _("Comments are closed: readers can no longer post or reply."),
  hidden: _("Comments are hidden from readers."),
};

// The clone's forms were rendered for id "": point them at this comment.
export function wireActionForms(li, id) {
  const card = cardOf(li);
  if (!card) return;
  const enc = encodeURIComponent(id);
  card.querySelectorAll("form[data-action-form]").forEach((form) => {
    const action = form.dataset.actionForm;
    if (action !== "ban" && action !== "unban") form.setAttribute("action", "/api/comments/" + enc + "/" + action);
    const next = field(form, "next");
    if (next) next.value = permalink(state.slug, id);
    const commentId = field(form, "comment_id");
    if (commentId) commentId.value = id;
  });
}

// A button that hid itself (Remove becomes Restore) must not leave the focus nowhere.
function keepFocus(scope, fallbackSelector) {
  const active = document.activeElement;
  if (active && scope.contains(active) && active.offsetParent !== null) return;
  const next = scope.querySelector(fallbackSelector);
  if (next && next.offsetParent !== null) next.focus();
}

function onActionDone(action, form, li, data, resultEl) {
  const now = new Date().toISOString();
  const same = li && data.comment && data.comment.id === li.dataset.id;
  switch (action) {
    case "report": {
      if (li) li.dataset.reported = "1";
      const details = form.closest("details");
      if (details) { details.open = false; details.hidden = true; }
      showResult(resultEl, data.already ? _("You have already reported this comment. Thank you.")
        : _("Thank you — a moderator will take a look."));
      return;
    }
    case "remove":
      if (same) placeComment(data.comment);
      else changeStatus(li, "removed", { removed_by: state.me, removed_at: now });
      showResult(resultEl, _("Removed. Readers see that a moderator removed it."));
      break;
    case "restore":
    case "approve":
      if (same) placeComment(data.comment);
      else changeStatus(li, "visible", {});
      showResult(resultEl, action === "approve" ? _("Approved — readers can see it now.") : _("Restored."));
      break;
    case "ban": {
      const ip = form.elements.namedItem("ip");
      if (li) setReaderBanned(li.dataset.readerId, true);
      showResult(resultEl, ip && ip.checked ? _("Author banned {duration}, with their IP address.", { duration: banLength(form) })
        : _("Author banned {duration}.", { duration: banLength(form) }));
      break;
    }
    case "unban":
      if (li) setReaderBanned(li.dataset.readerId, false);
      showResult(resultEl, _("Ban lifted: they can comment again."));
      break;
    case "premoderation": {
      const sent = form.elements.namedItem("enabled");
      const on = typeof data.enabled === "boolean" ? data.enabled
        : typeof data.premoderation === "boolean" ? data.premoderation : !!sent && sent.value === "1";
      setPremoderation(form, on);
      showResult(resultEl, on ? _("Pre-moderation is on.") : _("Pre-moderation is off."));
      return;
    }
    case "thread-open":
    case "thread-close":
    case "thread-hide":
      // The event reaches this page too; applying the answer now spares the wait.
      setThreadState(data.state);
      showResult(resultEl, THREAD_STATE_DONE[data.state] || _("Done."));
      return;
    default:
      showResult(resultEl, _("Done."));
  }
  // Ban and Lift ban take each other's place: the focus moves to the one now shown.
  const counterpart = { ban: 'form[data-action-form="unban"] button', unban: "details.ban > summary" }[action];
  if (li) keepFocus(cardOf(li) || li, counterpart || ".mod-tools form:not([hidden]) button");
}

function setPremoderation(form, on) {
  const bar = form.closest(".mod-bar") || form;
  const next = form.elements.namedItem("enabled");
  if (next) next.value = on ? "0" : "1";
  const sw = bar.querySelector('[data-field="premod-switch"]');
  if (sw) sw.setAttribute("aria-pressed", on ? "true" : "false");
  const stateEl = bar.querySelector('[data-field="premod-state"]');
  if (stateEl) stateEl.textContent = on ? pgettext("pre-moderation", "on") : pgettext("pre-moderation", "off");
  const note = bar.querySelector('[data-field="premod-note"]');
  if (note) note.textContent = on ? _("New comments wait for a moderator before readers see them.") : _("New comments appear at once.");
}

async function onActionSubmit(event) {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.matches("[data-action-form]")) return;
  event.preventDefault();
  if (form.dataset.busy === "1") return;
  const action = form.dataset.actionForm;
  const li = form.closest(".comment");
  const scope = li ? cardOf(li) : form.closest(".mod-bar");
  const resultEl = scope ? scope.querySelector('[data-field="action-result"]') : null;
  showResult(resultEl, "");
  setActionBusy(form, true);
  const outcome = await sendAction(form);
  setActionBusy(form, false);
  if (!outcome.ok) {
    showResult(resultEl, actionError(outcome, _("Your moderator session has ended. Please log in again.")), true);
    return;
  }
  onActionDone(action, form, li, outcome.data, resultEl);
}

export function startActions() {
  state.root.addEventListener("submit", onActionSubmit);
}
