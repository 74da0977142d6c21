/* Backchannel: the moderation desk, a live work queue.
 *
 * The page works without this file (every action is a form that posts and comes back here).
 * With it:
 *   - /moderation/live brings new comments (desk_comment), reports (desk_report) and what every
 *     moderator does on any instance (desk_action); each updates its card in place, so two
 *     moderators never work the same comment twice. After every (re)connect the queue is
 *     reloaded from /api/moderation/queue and merged into the cards, so nothing is missed;
 *   - actions go with fetch and are answered on the card; a ban can be lifted from the
 *     author's cards and from the ban's line in the audit log;
 *   - keyboard: j/k move between cards, r remove, u restore, a approve, d dismiss, b ban,
 *     Enter opens the comment, ? shows the list. Never while typing in a field, and not at all
 *     once the moderator turns single-key shortcuts off (WCAG 2.1.4; remembered per browser).
 *
 * Cards are cloned from <template id="desk-card-template">, rendered by the same Jinja macro
 * as the server's cards. Reader text only reaches the DOM through textContent; the one
 * innerHTML is comment.html, which the server has already made safe.
 */

import { local, permalink, say, toInt } from "./lib/util.js";
import { _, lang, ngettext, pgettext } from "./lib/i18n.js";
import { setTime } from "./lib/times.js";
import { cloneFrom } from "./lib/clone.js";
import { ReconnectingSocket } from "./lib/socket.js";
import { actionError, sendAction, setActionBusy, setReader, showBanned, showResult as showIn, showThreadState } from "./lib/actions.js";

const CLOSE_SESSION_ENDED = 4003; // the moderator logged out (here or elsewhere)
const AUDIT_MAX = 200;
const KEY_SHORTCUTS = "backchannel.desk-shortcuts";
const STATUS_LABELS = { visible: _("Published"), pending: _("Awaiting approval"), removed: _("Removed") };
// The audit line's words; the same table as ACTION_TEXT in _desk.html.
const ACTION_TEXT = {
  remove: _("removed a comment"), restore: _("restored a comment"), approve: _("approved a comment"),
  dismiss: _("dismissed the reports on a comment"), ban: _("banned"), unban: _("lifted the ban on"),
  premoderation: _("changed pre-moderation"), rules: _("changed the spam rules"), login: _("logged in"), logout: _("logged out"),
  close: _("closed the comments"), open: _("reopened the comments"), hide: _("hid the comments"),
  edit: _("edited their comment"), delete: _("deleted their comment"),
  many_votes: _("cast many votes (over the limit of an hour)"),
};
// "Removed by alice": who last acted on a card, and what.
const HANDLED_BY = {
  remove: (moderator) => _("Removed by {moderator}", { moderator }),
  restore: (moderator) => _("Restored by {moderator}", { moderator }),
  approve: (moderator) => _("Approved by {moderator}", { moderator }),
  dismiss: (moderator) => _("Reports dismissed by {moderator}", { moderator }),
};
const HANDLED_TEXT = { remove: _("Removed"), restore: _("Restored"), approve: _("Approved"), dismiss: _("Reports dismissed") };
const DONE_TEXT = { remove: _("Removed."), restore: _("Restored."), approve: _("Approved."), dismiss: _("Reports dismissed.") };
const SHORTCUT_ACTIONS = { r: "remove", u: "restore", a: "approve", d: "dismiss" };
const NOT_APPLICABLE = {
  remove: _("Already removed."), restore: _("Nothing to restore."),
  approve: _("This comment is not awaiting approval."), dismiss: _("No open reports on this comment."),
};

const desk = document.getElementById("desk");
const template = document.getElementById("desk-card-template");
const ready = !!desk && !!template && "content" in template;

const me = ready ? desk.dataset.moderator || "" : "";
const liveUrl = ready ? desk.dataset.liveUrl || "/moderation/live" : "";
const queueUrl = ready ? desk.dataset.queueUrl || "/api/moderation/queue" : "";
const q = (selector) => (ready ? desk.querySelector(selector) : null);
const lists = { report: q('[data-list="report"]'), comment: q('[data-list="comment"]') };
const auditList = q('[data-list="audit"]');
const connEl = q("[data-conn]");
const summaryEl = q("[data-desk-summary]");
const filterBar = q("[data-filter]");
const keysHelp = document.getElementById("desk-keys");
const baseTitle = document.title;
// What changes as the desk lives, in one object.
const state = {
  socket: null,              // the ReconnectingSocket
  filter: "all",             // which comments "Latest comments" shows
  reloading: null,           // the queue reload under way, if any
  titles: new Map(),         // slug -> article title, for the audit log
  readerNames: new Map(),    // reader id -> the name on their latest card, for the audit log
};

// --- small helpers ----------------------------------------------------------------------

// "remove", "removed", "comment.remove" … -> "remove"
function verbOf(action) {
  const a = String(action || "").toLowerCase().split(/[.:]/).pop();
  const map = { removed: "remove", restored: "restore", approved: "approve", dismissed: "dismiss",
                banned: "ban", unbanned: "unban" };
  return map[a] || a;
}

function who(name) {
  return name && name === me ? _("you") : name || _("a moderator");
}

function f(card, name) {
  return card.querySelector('[data-field="' + name + '"]');
}

function allCards() {
  return Array.from(desk.querySelectorAll(".desk-card"));
}

function cardsFor(id) {
  return id ? allCards().filter((c) => c.dataset.id === id) : [];
}

function cardOf(kind, id) {
  return cardsFor(id).find((c) => c.dataset.kind === kind) || null;
}

function readerCards(readerId) {
  return readerId ? allCards().filter((c) => c.dataset.readerId === readerId) : [];
}

const whenFormat = (() => {
  try { return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" }); } catch (e) { return null; }
})();

// The audit log's details are stored in English ("for good", "until 2026-…", "from 10.0.0.1"):
// the known shapes are said in the page's language (as server/pages.py's audit_detail does).
const DETAILS = [
  [/^for good$/, () => _("for good")],
  [/^until (.+)$/, (m) => _("until {when}", { when: m[1] })],
  [/^from (.+)$/, (m) => _("from {address}", { address: m[1] })],
  [/^on$/, () => pgettext("pre-moderation", "on")],
  [/^off$/, () => pgettext("pre-moderation", "off")],
  [/^changed nothing$/, () => _("changed nothing")],
  [/^changed (.+)$/, (m) => _("changed {settings}", { settings: m[1] })],
  [/^([\d.]+) days after publication$/, (m) => _("{days} days after publication", { days: m[1] })],
];

// "until 2026-11-27T15:31:00.000Z" reads better in the moderator's own time.
function prettyDetail(detail) {
  let text = typeof detail === "string" ? detail : JSON.stringify(detail);
  for (const [shape, say] of DETAILS) {
    const m = shape.exec(text);
    if (m) { text = say(m); break; }
  }
  return text.replace(/\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?/g, (iso) => {
    const t = Date.parse(iso);
    return Number.isNaN(t) || !whenFormat ? iso : whenFormat.format(new Date(t));
  });
}

function updateTimes() {
  desk.querySelectorAll("time[data-ago]").forEach((el) => setTime(el));
}

// --- cards ------------------------------------------------------------------------------

// The template is rendered for kind "card" and id "": every per-card id token ends in "-".
function newCard(kind, id) {
  const li = cloneFrom(template, "li.desk-item", id, (t) => t.replace(/(^|-)card-/, "$1" + kind + "-"));
  const card = li.querySelector(".desk-card");
  card.dataset.kind = kind;
  card.dataset.id = id;
  card.querySelectorAll("form[data-action-form]").forEach((form) => {
    const action = form.dataset.actionForm;
    if (action !== "ban" && action !== "unban") form.setAttribute("action", "/api/comments/" + encodeURIComponent(id) + "/" + action);
    const commentId = form.elements.namedItem("comment_id");
    if (commentId) commentId.value = id;
  });
  announceShortcuts(li);
  return li;
}

// c: a comment in the moderator view, with slug and article_title.
function fillCard(card, c) {
  const id = card.dataset.id;
  if (c.slug) card.dataset.slug = c.slug;
  if (c.slug && c.article_title) state.titles.set(c.slug, c.article_title);
  if (c.created_at) card.dataset.createdAt = c.created_at;
  const link = f(card, "article");
  if (link) {
    link.setAttribute("href", permalink(card.dataset.slug || "", id));
    link.textContent = c.article_title || c.slug || card.dataset.slug || "Article";
  }
  const author = c.author || {};
  const name = f(card, "name");
  if (name) name.textContent = author.name || "";
  const staff = f(card, "staff");
  if (staff) staff.hidden = author.staff !== true;
  const about = f(card, "about");
  if (about) { about.textContent = author.about || ""; about.hidden = !author.about; }
  const time = f(card, "time");
  if (time && c.created_at) setTime(time, c.created_at);
  const replyTag = f(card, "reply-tag");
  if (replyTag) replyTag.hidden = !c.parent;
  const body = f(card, "body");
  // comment.html is produced by the server's sanitiser: the one place HTML is inserted.
  if (body && typeof c.html === "string") body.innerHTML = c.html;
  if ("banned" in c) setBanned(card, !!c.banned, null);
  if ("reader_id" in c) {
    setReader(card, card, c.reader_id);
    if (c.reader_id && author.name) state.readerNames.set(c.reader_id, author.name);
  }
  if (typeof c.report_count === "number" && card.dataset.kind !== "report") {
    setReports(card, { count: c.report_count, open: c.report_count > 0 });
  }
  const status = c.status || "visible";
  if (status === "removed") {
    setStatus(card, status);
    // A comment that does not say who removed it keeps the line a desk_action already wrote.
    if (c.removed_by || card.dataset.handled !== "remove") {
      setHandled(card, { action: "remove", by: c.removed_by, at: c.removed_at });
    }
  } else {
    if (card.dataset.handled === "remove") setHandled(card, null); // restored meanwhile
    setStatus(card, status);
  }
}

// The author is banned (or no longer): Ban author gives way to Lift ban, and the card says
// who did it when the action is known (a: the audit entry).
function setBanned(card, banned, a) {
  showBanned(card, card, banned);
  const el = f(card, "banned");
  if (!el) return;
  if (banned) {
    el.textContent = a ? _("Author banned by {moderator}", { moderator: who(a.moderator) }) + (a.detail ? " (" + prettyDetail(a.detail) + ")" : "")
      : el.textContent || _("Author banned");
  } else if (a) {
    el.hidden = false; // "Ban lifted by …" stays as a record on the card
    el.textContent = _("Ban lifted by {moderator}", { moderator: who(a.moderator) });
  }
}

function setStatus(card, status) {
  card.dataset.status = status;
  const label = f(card, "status");
  if (label) label.textContent = STATUS_LABELS[status] || status;
  card.querySelectorAll("form[data-action-form]").forEach((form) => {
    const action = form.dataset.actionForm;
    if (action === "remove") form.hidden = status === "removed";
    else if (action === "restore") form.hidden = status !== "removed";
    else if (action === "approve") form.hidden = status !== "pending";
  });
}

// The line that says who last acted on the card ("Removed by alice, just now"), or null.
function setHandled(card, h) {
  const el = f(card, "handled");
  if (!el) return;
  card.dataset.handled = h ? h.action : "";
  el.hidden = !h;
  if (!h) return;
  const text = f(card, "handled-text");
  if (text) {
    text.textContent = h.by && HANDLED_BY[h.action] ? HANDLED_BY[h.action](who(h.by))
      : HANDLED_TEXT[h.action] || h.action;
  }
  const when = f(card, "handled-when");
  const time = when && when.querySelector("time");
  if (when && time) {
    when.hidden = !h.at;
    setTime(time, h.at || "");
  }
}

// r: {count, reasons?, last_reported_at?, open}
function setReports(card, r) {
  const box = f(card, "reports");
  const count = toInt(r.count, 0);
  card.dataset.openReports = r.open ? "1" : "0";
  if (box) box.hidden = count <= 0;
  const countEl = f(card, "report-count");
  if (countEl) countEl.textContent = ngettext("Reported {n} time", "Reported {n} times", count);
  if (r.last_reported_at !== undefined) {
    card.dataset.reportedAt = r.last_reported_at || "";
    const when = f(card, "reported-when");
    const time = when && when.querySelector("time");
    if (when && time) { when.hidden = !r.last_reported_at; setTime(time, r.last_reported_at || ""); }
  }
  if (Array.isArray(r.reasons)) {
    const list = f(card, "reasons");
    if (list) {
      const reasons = [...new Set(r.reasons.map((x) => String(x || "").trim()).filter(Boolean))].slice(0, 5);
      list.replaceChildren(...reasons.map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        return item;
      }));
      list.hidden = !reasons.length;
    }
  }
  const dismiss = card.querySelector('form[data-action-form="dismiss"]');
  if (dismiss) dismiss.hidden = !r.open;
}

// Newest first, by the card's data-<key>.
function insertSorted(list, li, key) {
  const value = li.querySelector(".desk-card").dataset[key] || "";
  for (const other of list.children) {
    const card = other.querySelector(".desk-card");
    if (card && (card.dataset[key] || "") < value) { list.insertBefore(li, other); return; }
  }
  list.appendChild(li);
}

function flash(card) {
  card.classList.add("is-new");
  setTimeout(() => card.classList.remove("is-new"), 3000);
}

function upsertComment(c, fresh) {
  if (!c || !c.id) return null;
  cardsFor(c.id).forEach((card) => fillCard(card, c));
  let card = cardOf("comment", c.id);
  if (!card && lists.comment) {
    const li = newCard("comment", c.id);
    card = li.querySelector(".desk-card");
    fillCard(card, c);
    insertSorted(lists.comment, li, "createdAt");
    applyFilter(li);
    if (fresh) flash(card);
  }
  return card;
}

function upsertReport(r, fresh) {
  const c = r && r.comment;
  if (!c || !c.id) return null;
  cardsFor(c.id).forEach((other) => fillCard(other, c)); // a report does not add to "Latest comments"
  const report = { count: r.count, reasons: r.reasons || [], last_reported_at: r.last_reported_at, open: true };
  let card = cardOf("report", c.id);
  if (!card && lists.report) {
    const li = newCard("report", c.id);
    card = li.querySelector(".desk-card");
    fillCard(card, c);
    setReports(card, report);
    insertSorted(lists.report, li, "reportedAt");
    if (fresh) flash(card);
  } else if (card) {
    setReports(card, report);
    if (card.dataset.handled === "dismiss") setHandled(card, null); // reported again
  }
  // The comment's own card counts the reports too.
  const plain = cardOf("comment", c.id);
  if (plain) setReports(plain, { count: r.count, open: true });
  return card;
}

// What a moderator did (this one, or another on any instance), applied to the cards.
function applyAction(a) {
  const verb = verbOf(a.action);
  const at = a.at || new Date().toISOString();
  const cards = cardsFor(a.comment_id);
  switch (verb) {
    case "remove":
    case "restore":
    case "approve":
      cards.forEach((card) => {
        setStatus(card, verb === "remove" ? "removed" : "visible");
        setHandled(card, { action: verb, by: a.moderator, at });
        // A comment acted on leaves the reports queue (the server closes its reports too).
        if (verb !== "restore" && card.dataset.openReports === "1") {
          setReports(card, { count: reportCount(card), open: false });
        }
      });
      break;
    case "dismiss":
      cards.forEach((card) => {
        setReports(card, { count: reportCount(card), open: false });
        setHandled(card, { action: verb, by: a.moderator, at });
      });
      break;
    case "ban":
    case "unban":
      (a.reader_id ? readerCards(a.reader_id) : cards).forEach((card) => setBanned(card, verb === "ban", a));
      if (verb === "unban") liftedInAudit(a.reader_id);
      break;
    case "open":
    case "close":
    case "hide":
      showThreadState(threadRow(a.slug), THREAD_STATE_OF[verb]);
      break;
    default: break;
  }
  updateCounts();
}

// --- threads: open, closed, hidden ------------------------------------------------------------

const THREAD_STATE_OF = { open: "open", close: "closed", hide: "hidden" };

function threadRow(slug) {
  if (!slug) return null;
  const row = Array.from(desk.querySelectorAll(".desk-thread")).find((li) => li.dataset.slug === slug);
  return row ? row.querySelector("[data-state-forms]") : null;
}

function reportCount(card) {
  const el = f(card, "report-count");
  const m = el && /(\d+)/.exec(el.textContent);
  return m ? toInt(m[1], 0) : 0;
}

// --- the audit log ----------------------------------------------------------------------

// Whom a ban is about: their name when the entry or a card knows it, else a short reader id.
function readerLabel(a) {
  const name = a.reader_name || state.readerNames.get(a.reader_id);
  if (name) return name;
  return a.reader_id ? _("reader {id}", { id: String(a.reader_id).slice(0, 8) }) : _("a reader");
}

// The ban's own line offers to lift it, until it is lifted.
function liftForm(readerId) {
  const blank = template.content.querySelector('form[data-action-form="unban"]');
  if (!blank || !readerId) return null;
  const form = blank.cloneNode(true);
  form.hidden = false;
  form.classList.add("audit-lift");
  form.setAttribute("action", "/api/readers/" + encodeURIComponent(readerId) + "/unban");
  return form;
}

function liftedInAudit(readerId) {
  if (!auditList || !readerId) return;
  auditList.querySelectorAll('.audit-item[data-action="ban"]').forEach((line) => {
    if (line.dataset.readerId !== readerId) return;
    const form = line.querySelector('form[data-action-form="unban"]');
    if (form) form.remove();
  });
}

function auditLine(a, liftable) {
  const li = document.createElement("li");
  li.className = "audit-item";
  li.dataset.action = a.action || "";
  if (a.reader_id) li.dataset.readerId = a.reader_id;
  const time = document.createElement("time");
  time.setAttribute("data-ago", "");
  setTime(time, a.at || new Date().toISOString());
  const what = document.createElement("span");
  what.className = "audit-what";
  const name = document.createElement("strong");
  name.textContent = a.moderator || "";
  const verb = verbOf(a.action);
  what.append(name, " " + (ACTION_TEXT[verb] || a.action || ""));
  if (verb === "ban" || verb === "unban") {
    const whom = document.createElement("span");
    whom.className = "audit-whom";
    whom.textContent = readerLabel(a);
    what.append(" ", whom);
  }
  if (a.slug) {
    const link = document.createElement("a");
    link.href = a.comment_id ? permalink(a.slug, a.comment_id) : "/articles/" + encodeURIComponent(a.slug);
    link.textContent = state.titles.get(a.slug) || a.slug;
    what.append(" " + pgettext("audit log: a comment on an article", "on") + " ", link);
  }
  if (a.reason) what.append(" — “" + a.reason + "”");
  if (a.detail) {
    const detail = document.createElement("span");
    detail.className = "audit-detail";
    detail.textContent = "(" + prettyDetail(a.detail) + ")";
    what.append(" ", detail);
  }
  li.append(time, " ", what);
  const lift = verb === "ban" && liftable ? liftForm(a.reader_id) : null;
  if (lift) li.append(" ", lift);
  return li;
}

// Newest first: a ban whose reader has a later unban (or a later ban) offers no Lift ban.
function auditLines(entries) {
  const seen = new Set();
  return entries.map((a) => {
    const verb = verbOf(a.action);
    const liftable = verb === "ban" && a.reader_id && !seen.has(a.reader_id);
    if ((verb === "ban" || verb === "unban") && a.reader_id) seen.add(a.reader_id);
    return auditLine(a, liftable);
  });
}

// A Lift ban that failed from the audit log says why beside its button, which stays for a retry.
function showAuditError(line, text) {
  let el = line.querySelector(".action-result");
  if (!el) {
    el = document.createElement("span");
    el.setAttribute("role", "status");
    line.append(" ", el);
  }
  el.className = "action-result is-error";
  el.textContent = text;
}

function prependAudit(a) {
  if (!auditList) return;
  if (verbOf(a.action) === "ban") liftedInAudit(a.reader_id); // only the newest ban offers it
  auditList.insertBefore(auditLine(a, true), auditList.firstChild);
  while (auditList.children.length > AUDIT_MAX) auditList.lastElementChild.remove();
  showEmpty("audit", auditList);
}

// --- counts, filter, announcements -----------------------------------------------------

function showEmpty(kind, list) {
  const el = desk.querySelector('[data-empty="' + kind + '"]');
  if (el && list) el.hidden = list.children.length > 0;
}

function updateCounts() {
  const open = lists.report ? lists.report.querySelectorAll('.desk-card[data-open-reports="1"]').length : 0;
  const pending = lists.comment ? lists.comment.querySelectorAll('.desk-card[data-status="pending"]').length : 0;
  const reportsCount = desk.querySelector('[data-count="reports"]');
  if (reportsCount) {
    reportsCount.textContent = String(open);
    reportsCount.toggleAttribute("data-zero", open === 0);
  }
  const pendingCount = desk.querySelector('[data-count="pending"]');
  if (pendingCount) pendingCount.textContent = pending ? String(pending) : "";
  if (summaryEl) {
    summaryEl.textContent = ngettext("{n} open report", "{n} open reports", open) + " · "
      + ngettext("{n} awaiting approval", "{n} awaiting approval", pending);
  }
  document.title = (open + pending ? "(" + (open + pending) + ") " : "") + baseTitle;
  showEmpty("report", lists.report);
  showEmpty("comment", lists.comment);
}

function matchesFilter(card) {
  if (state.filter === "pending") return card.dataset.status === "pending";
  if (state.filter === "removed") return card.dataset.status === "removed";
  return true;
}

// Applied when the filter changes or a card arrives, never when a card changes under the
// moderator's hands: an approved card stays where it is until the filter is chosen again.
function applyFilter(li) {
  const items = li ? [li] : lists.comment ? Array.from(lists.comment.children) : [];
  items.forEach((item) => {
    const card = item.querySelector(".desk-card");
    if (card) item.hidden = !matchesFilter(card);
  });
}

function startFilter() {
  if (!filterBar) return;
  filterBar.hidden = false;
  filterBar.addEventListener("click", (event) => {
    const button = event.target.closest("[data-filter-value]");
    if (!button) return;
    state.filter = button.dataset.filterValue;
    filterBar.querySelectorAll("[data-filter-value]").forEach((b) => {
      b.setAttribute("aria-pressed", b === button ? "true" : "false");
    });
    applyFilter(null);
  });
}

let announceTimer = 0;
function announce(text) {
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => say(document.getElementById("desk-announcer"), text), 300);
}

// --- actions ----------------------------------------------------------------------------

function showResult(card, text, isError) {
  showIn(card && f(card, "action-result"), text, isError);
}

async function onSubmit(event) {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.matches("[data-action-form]")) return;
  event.preventDefault();
  if (form.dataset.busy === "1") return;
  const card = form.closest(".desk-card");
  const auditItem = form.closest(".audit-item");
  const threadItem = form.closest(".desk-thread");
  const action = form.dataset.actionForm;
  showResult(card, "");
  setActionBusy(form, true);
  const outcome = await sendAction(form);
  setActionBusy(form, false);
  if (!outcome.ok) {
    if (card) showResult(card, actionError(outcome), true);
    else if (auditItem) showAuditError(auditItem, actionError(outcome));
    else if (threadItem) showIn(threadItem.querySelector('[data-field="action-result"]'), actionError(outcome), true);
    return;
  }
  const id = card ? card.dataset.id : "";
  // The server's desk_action follows and says the same; applying it now answers at once.
  if (threadItem) {
    showThreadState(threadItem.querySelector("[data-state-forms]"), outcome.data.state);
    showIn(threadItem.querySelector('[data-field="action-result"]'), "Comments are " + outcome.data.state + ".");
  } else if (action === "ban") {
    const duration = form.elements.namedItem("duration");
    const label = duration && duration.selectedOptions[0] ? duration.selectedOptions[0].textContent.trim().toLowerCase() : "";
    applyAction({ action: "ban", moderator: me, reader_id: card && card.dataset.readerId, comment_id: id,
                  detail: label === "for good" || !label ? "for good" : label });
    showResult(card, _("Author banned."));
  } else if (action === "unban") {
    const readerId = card ? card.dataset.readerId : (auditItem && auditItem.dataset.readerId) || "";
    applyAction({ action: "unban", moderator: me, reader_id: readerId });
    if (card) showResult(card, _("Ban lifted."));
  } else {
    applyAction({ action, moderator: me, comment_id: id });
    showResult(card, DONE_TEXT[action] || _("Done."));
  }
  // The button pressed may have hidden itself (Remove becomes Restore): keep the focus on the card.
  if (card && (!document.activeElement || document.activeElement === document.body ||
               (card.contains(document.activeElement) && document.activeElement.offsetParent === null))) {
    card.focus({ preventScroll: true });
  }
}

// --- keyboard ---------------------------------------------------------------------------

function shortcutsOn() {
  return desk.dataset.shortcuts !== "off";
}

// Single-key shortcuts can be set off by a stray key press or a speech-input word (WCAG 2.1.4):
// the moderator may turn them off; the choice is kept in this browser.
function setShortcuts(on, remember) {
  desk.dataset.shortcuts = on ? "on" : "off";
  if (remember) local.set(KEY_SHORTCUTS, on ? "on" : "off");
  announceShortcuts(desk);
  const summaryKey = keysHelp && keysHelp.querySelector("summary kbd");
  if (summaryKey) summaryKey.hidden = !on;
}

// aria-keyshortcuts only while the keys work (cards cloned later included).
function announceShortcuts(scope) {
  const on = shortcutsOn();
  scope.querySelectorAll("[aria-keyshortcuts], [data-keyshortcuts]").forEach((el) => {
    const keys = el.getAttribute("aria-keyshortcuts") || el.dataset.keyshortcuts;
    el.dataset.keyshortcuts = keys;
    if (on) el.setAttribute("aria-keyshortcuts", keys);
    else el.removeAttribute("aria-keyshortcuts");
  });
}

function startShortcutSwitch() {
  const box = document.getElementById("desk-shortcuts");
  const on = local.get(KEY_SHORTCUTS) !== "off";
  setShortcuts(on, false);
  if (!box) return;
  box.checked = on;
  const wrap = box.closest("[data-shortcuts-switch]");
  if (wrap) wrap.hidden = false;
  box.addEventListener("change", () => setShortcuts(box.checked, true));
}

function isTyping(el) {
  if (!el || !(el instanceof Element)) return false;
  return el.matches("input, textarea, select, [contenteditable]:not([contenteditable='false'])");
}

function visibleCards() {
  return allCards().filter((card) => card.offsetParent !== null);
}

function move(step) {
  const cards = visibleCards();
  if (!cards.length) return;
  const current = document.activeElement && document.activeElement.closest ? document.activeElement.closest(".desk-card") : null;
  const i = current ? cards.indexOf(current) : -1;
  const next = i === -1 ? (step > 0 ? cards[0] : cards[cards.length - 1])
    : cards[Math.max(0, Math.min(cards.length - 1, i + step))];
  next.focus({ preventScroll: true });
  next.scrollIntoView({ block: "nearest" });
}

function onKeydown(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
  if (!shortcutsOn() || isTyping(event.target)) return;
  const key = event.key;
  if (key === "?") {
    event.preventDefault();
    if (keysHelp) {
      keysHelp.open = !keysHelp.open;
      if (keysHelp.open) keysHelp.scrollIntoView({ block: "nearest" });
    }
    return;
  }
  if (key === "j" || key === "k") {
    event.preventDefault();
    move(key === "j" ? 1 : -1);
    return;
  }
  const card = document.activeElement && document.activeElement.closest ? document.activeElement.closest(".desk-card") : null;
  if (!card) return;
  if (SHORTCUT_ACTIONS[key]) {
    event.preventDefault();
    const action = SHORTCUT_ACTIONS[key];
    const form = card.querySelector('form[data-action-form="' + action + '"]');
    if (!form || form.hidden) { showResult(card, NOT_APPLICABLE[action]); return; }
    form.requestSubmit();
    return;
  }
  if (key === "b") {
    const ban = f(card, "ban");
    if (!ban || ban.hidden) return;
    event.preventDefault();
    ban.open = true;
    const first = ban.querySelector("select, input:not([type=hidden])");
    if (first) first.focus();
    return;
  }
  if (key === "Enter" && event.target === card) {
    const link = f(card, "article");
    if (link) { event.preventDefault(); location.assign(link.href); }
  }
}

// Escape inside an open ban form closes it and gives the focus back to its card (a key that
// types nothing, so it stays whether shortcuts are on or off).
function onEscape(event) {
  if (event.key !== "Escape") return;
  const ban = event.target.closest && event.target.closest("details.ban[open]");
  if (!ban) return;
  ban.open = false;
  const card = ban.closest(".desk-card");
  if (card) card.focus();
}

// --- the socket -------------------------------------------------------------------------

function showConn(connState) {
  if (!connEl) return;
  connEl.hidden = false;
  connEl.dataset.state = connState;
  const texts = { live: _("● Live"), connecting: _("Connecting…"), reconnecting: _("Reconnecting…"), offline: _("Offline — reconnecting…") };
  if (connState === "refused") {
    connEl.textContent = _("Live updates paused — retrying…");
  } else if (texts[connState]) {
    connEl.textContent = texts[connState];
  }
}

function signedOut() {
  state.socket.stop();
  showConn("stopped");
  connEl.textContent = _("Signed out") + " — ";
  const link = document.createElement("a");
  link.href = "/login?next=" + encodeURIComponent("/moderation");
  link.textContent = _("log in again");
  connEl.appendChild(link);
}

function onClose(event, { welcomed }) {
  if (event.code === CLOSE_SESSION_ENDED) { signedOut(); return "stop"; }
  // Refused before any frame: the session may have ended (the upgrade is answered 403).
  if (!welcomed) checkSession();
  return undefined;
}

async function checkSession() {
  try {
    const res = await fetch(queueUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (res.status === 401 || res.status === 403) signedOut();
  } catch (e) { /* offline: the reconnect will tell */ }
}

function onFrame(msg) {
  switch (msg.type) {
    case "desk_welcome":
      state.socket.markWelcomed();
      reloadQueue(); // whatever happened while this socket was not listening
      break;
    case "desk_comment": {
      const c = msg.comment;
      const card = upsertComment(c, true);
      if (card && c) {
        const name = (c.author && c.author.name) || _("someone");
        announce(c.status === "pending" ? _("Comment awaiting approval from {name}", { name })
          : _("New comment from {name}", { name }));
      }
      updateCounts();
      break;
    }
    case "desk_report":
      if (upsertReport(msg.report, true)) announce(_("A comment was reported"));
      updateCounts();
      break;
    case "desk_action":
      if (msg.action) {
        applyAction(msg.action);
        prependAudit(msg.action);
      }
      break;
    default: break;
  }
}

async function reloadQueue() {
  if (state.reloading) return state.reloading;
  state.reloading = (async () => {
    try {
      const res = await fetch(queueUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!res.ok) return;
      mergeQueue(await res.json());
    } catch (e) {
      /* the socket's next welcome tries again */
    } finally {
      state.reloading = null;
    }
  })();
  return state.reloading;
}

// The queue as the server has it now, merged into the cards in place (the focus and any open
// ban form stay where they are).
function mergeQueue(data) {
  if (!data || typeof data !== "object") return;
  const comments = Array.isArray(data.comments) ? data.comments : [];
  comments.slice().reverse().forEach((c) => upsertComment(c, false));
  const reports = Array.isArray(data.reports) ? data.reports : [];
  const open = new Set();
  reports.slice().reverse().forEach((r) => {
    if (r && r.comment && r.comment.id) open.add(r.comment.id);
    upsertReport(r, false);
  });
  // Reports closed while this desk was away.
  desk.querySelectorAll('.desk-card[data-open-reports="1"]').forEach((card) => {
    if (!open.has(card.dataset.id)) setReports(card, { count: reportCount(card), open: false });
  });
  if (Array.isArray(data.audit) && auditList) {
    auditList.replaceChildren(...auditLines(data.audit.slice(0, AUDIT_MAX)));
    showEmpty("audit", auditList);
  }
  updateCounts();
}

// --- start ------------------------------------------------------------------------------

if (ready) {
  const wsUrl = () => (location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + liveUrl;
  state.socket = new ReconnectingSocket({ url: wsUrl, onFrame, onClose, onStatus: showConn });
  desk.addEventListener("submit", onSubmit);
  desk.addEventListener("keydown", onEscape);
  document.addEventListener("keydown", onKeydown);
  startFilter();
  startShortcutSwitch();
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    updateTimes();
    state.socket.reconnectNow({ fresh: true });
  });
  window.addEventListener("online", () => state.socket.reconnectNow({ fresh: true }));
  window.addEventListener("pagehide", () => state.socket.pause());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) state.socket.reconnectNow({ fresh: true });
  });
  allCards().forEach((card) => {
    const link = f(card, "article");
    if (card.dataset.slug && link && link.textContent) state.titles.set(card.dataset.slug, link.textContent);
    const name = f(card, "name");
    if (card.dataset.readerId && name && name.textContent) state.readerNames.set(card.dataset.readerId, name.textContent);
  });
  updateTimes();
  updateCounts();
  setInterval(() => { if (!document.hidden) updateTimes(); }, 30000);
  showConn("connecting");
  state.socket.connect();
}
