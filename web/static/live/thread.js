/* The thread on the page: comments built from <template id="comment-template"> (the same Jinja
 * macro as every server-rendered comment), updated in place, counted, announced, and shown as
 * "N new comments" until the reader has seen them.
 *
 * Reader text only ever reaches the DOM through textContent; the one innerHTML is
 * comment.html, which the server has already made safe.
 */

import { state } from "./state.js";
import { permalink, toInt, say } from "../lib/util.js";
import { _, formatList, ngettext } from "../lib/i18n.js";
import { setTime } from "../lib/times.js";
import { cloneFrom, fixIds } from "../lib/clone.js";
import { setReader, showBanned, showThreadState } from "../lib/actions.js";
import { keepWrittenForms, prepareReplyForm } from "./composer.js";
import { wireActionForms } from "./actions.js";
import { fillEdited, showEditedMark, showOwnTools, showVotes } from "./mine.js";

const TOMBSTONE = _("This comment was removed by a moderator.");
const DELETED_TOMBSTONE = _("Its author deleted this comment.");
// Removed by a moderator or deleted by its author: its place (and replies) stay, not its words.
const WITHOUT_TEXT = new Set(["removed", "deleted"]);
// Comments longer than this many characters may be collapsed behind "Read more"; shorter ones
// are never measured (measuring every comment of a big thread costs a layout each).
const LONG_COMMENT_CHARS = 600;

const reducedMotion = window.matchMedia ? window.matchMedia("(prefers-reduced-motion: reduce)") : { matches: false };
const anchoringSupported = !!(window.CSS && CSS.supports && CSS.supports("overflow-anchor", "auto"));

export function commentEl(id) {
  if (!id) return null;
  const el = document.getElementById("c-" + id);
  return el && el.classList.contains("comment") ? el : null;
}

export function cardOf(li) {
  return li.querySelector(":scope > .comment-card");
}

export function part(li, name) {
  const card = cardOf(li);
  return card ? card.querySelector('[data-field="' + name + '"]') : null;
}

// --- relative times ---------------------------------------------------------------------

export function updateTimes() {
  state.thread.querySelectorAll('time[data-field="time"], time[data-ago]').forEach((el) => setTime(el));
}

// --- counts and announcements -----------------------------------------------------------

function setCount(n) {
  state.count = Math.max(0, n);
  state.root.dataset.count = String(state.count);
  const text = ngettext("{n} comment", "{n} comments", state.count);
  document.querySelectorAll("[data-comment-count]").forEach((el) => { el.textContent = text; });
  const empty = state.root.querySelector("[data-thread-empty]");
  if (empty) empty.hidden = state.thread.querySelector(".comment") !== null;
}

let announceQueue = [];
let announceTimer = 0;

function announce(comment) {
  const name = (comment.author && comment.author.name) || _("someone");
  announceQueue.push({ name, reply: !!comment.parent });
  clearTimeout(announceTimer);
  // Several arriving together (catch-up after a reconnect) become one announcement.
  announceTimer = setTimeout(flushAnnouncements, 700);
}

function flushAnnouncements() {
  const items = announceQueue;
  announceQueue = [];
  if (!items.length) return;
  let text;
  if (items.length === 1) {
    const name = items[0].name;
    text = items[0].reply ? _("New reply from {name}", { name }) : _("New comment from {name}", { name });
  } else {
    const names = [...new Set(items.map((i) => i.name))];
    const shown = names.slice(0, 3);
    const who = names.length > 3 ? _("{names} and others", { names: shown.join(", ") }) : formatList(shown);
    text = ngettext("{n} new comment, from {who}", "{n} new comments, from {who}", items.length, { n: items.length, who });
  }
  say(document.getElementById("live-announcer"), text);
}

// --- building and updating comments -----------------------------------------------------

// The page leaves most reply and report forms out (they made big threads slow to lay out;
// see _comment.html): a comment's details get theirs from the template's blank comment
// when they open.
export function ensureForm(details) {
  const kind = details.matches("details.reply") ? "reply" : "report";
  const present = details.querySelector("form");
  const li = details.closest("li.comment");
  if (present || !li) return present;
  const blank = state.template.content.querySelector(`li.comment > .comment-card details.${kind} form`);
  if (!blank) return null;
  const form = blank.cloneNode(true);
  const id = li.dataset.id;
  fixIds(form, id);
  const link = details.querySelector("[data-lazy-form]");
  if (link) link.remove();
  details.appendChild(form);
  if (kind === "reply") prepareReplyForm(form, id);
  else wireActionForms(li, id);
  return form;
}

export function buildComment(c, depth) {
  const li = cloneFrom(state.template, "li.comment", c.id);
  li.dataset.id = c.id;
  li.dataset.parent = c.parent || "";
  li.dataset.depth = String(depth);
  const link = part(li, "permalink");
  if (link) link.setAttribute("href", permalink(state.slug, c.id));
  const form = li.querySelector(":scope > .comment-card form[data-comment-form]");
  if (form) prepareReplyForm(form, c.id);
  const replies = li.querySelector(":scope > ol.replies");
  if (replies) replies.dataset.repliesOf = c.id;
  wireActionForms(li, c.id);
  fillComment(li, c);
  showInReplyTo(li, c.parent, depth);
  return li;
}

// Mirrors the macro: past four levels a reply no longer indents, so it names its parent.
function showInReplyTo(li, parentId, depth) {
  const line = part(li, "inreply");
  if (!line) return;
  const parentLi = commentEl(parentId);
  const parentName = parentLi && !WITHOUT_TEXT.has(parentLi.dataset.status) ? (part(parentLi, "name") || {}).textContent : "";
  line.hidden = depth < 5 || !parentName;
  if (line.hidden) return;
  const link = line.querySelector("a");
  if (link) link.setAttribute("href", "#c-" + parentId);
  const nameEl = line.querySelector('[data-field="inreply-name"]');
  if (nameEl) nameEl.textContent = parentName;
}

function setReports(li, n) {
  const flag = part(li, "reports");
  if (!flag) return;
  const reports = toInt(n, 0);
  flag.hidden = reports <= 0;
  flag.textContent = ngettext("Reported {n} time", "Reported {n} times", reports);
}

// Every comment on the page by this reader: after a ban or unban they all say so.
export function setReaderBanned(readerId, banned) {
  if (!readerId) return;
  state.thread.querySelectorAll("li.comment").forEach((li) => {
    if (li.dataset.readerId === readerId) showBanned(li, cardOf(li), banned);
  });
}

function fillComment(li, c) {
  const status = c.status || "visible";
  // Readers lose a removed comment's words; a moderator keeps them, dimmed.
  const removed = WITHOUT_TEXT.has(status) && !state.isMod;
  const author = c.author || {};
  const name = removed ? "" : author.name || "";
  const about = removed ? "" : author.about || "";

  if (state.isMod) {
    if ("banned" in c) li.dataset.banned = c.banned ? "1" : "";
    if ("reader_id" in c) setReader(li, cardOf(li), c.reader_id);
    if ("report_count" in c) setReports(li, c.report_count);
  }
  const nameEl = part(li, "name");
  if (nameEl) { nameEl.textContent = name; nameEl.hidden = removed; }
  // Set by the server for a moderator's own comments; a reader cannot type it.
  const staff = part(li, "staff");
  if (staff) staff.hidden = removed || author.staff !== true;
  const aboutEl = part(li, "about");
  if (aboutEl) { aboutEl.textContent = about; aboutEl.hidden = !about; }
  const replyTo = part(li, "reply-to");
  if (replyTo) replyTo.textContent = name ? " " + _("to {name}", { name }) : "";
  const timeEl = part(li, "time");
  if (timeEl && c.created_at) setTime(timeEl, c.created_at);
  const body = part(li, "body");
  // comment.html is produced by the server's sanitiser: the one place HTML is inserted.
  if (body) body.innerHTML = removed ? "" : c.html || "";
  showEditedMark(li, removed ? null : c.edited_at);
  showVotes(li, typeof c.votes === "number" ? c.votes : undefined);
  applyStatus(li, status, c);
  if (li.isConnected) collapseIfLong(li);
}

// `info` may carry removed_by / removed_at (moderator pages show who removed it and when).
function applyStatus(li, status, info) {
  const removed = WITHOUT_TEXT.has(status);
  const hideText = removed && !state.isMod;
  li.dataset.status = status;
  const body = part(li, "body");
  if (body) body.hidden = hideText;
  const more = part(li, "read-more");
  if (more && hideText) more.hidden = true;
  const tomb = part(li, "tombstone");
  if (tomb) { tomb.hidden = !hideText; tomb.textContent = status === "deleted" ? DELETED_TOMBSTONE : TOMBSTONE; }
  const vote = part(li, "vote");
  if (vote) vote.hidden = status !== "visible";
  showOwnTools(li);
  const pending = part(li, "pending");
  if (pending) pending.hidden = status !== "pending";
  const reply = part(li, "reply");
  if (reply) {
    reply.hidden = removed || status === "pending";
    if (reply.hidden) reply.open = false;
  }
  const report = part(li, "report");
  if (report) {
    report.hidden = status !== "visible" || li.dataset.reported === "1";
    if (report.hidden) report.open = false;
  }
  if (state.isMod) applyModStatus(li, status, info || {});
  const card = cardOf(li);
  const nameEl = part(li, "name");
  if (card && nameEl && tomb) card.setAttribute("aria-labelledby", hideText ? tomb.id : nameEl.id);
}

function applyModStatus(li, status, info) {
  const removed = WITHOUT_TEXT.has(status);
  if (removed) {
    if (info.removed_by !== undefined) li.dataset.removedBy = info.removed_by || "";
    if (info.removed_at !== undefined) li.dataset.removedAt = info.removed_at || "";
  } else {
    li.dataset.removedBy = "";
    li.dataset.removedAt = "";
  }
  const note = part(li, "removed-note");
  if (note) {
    note.hidden = !removed;
    const by = part(li, "removed-by");
    if (by && status === "deleted") by.textContent = _("Deleted by its author");
    else if (by) by.textContent = li.dataset.removedBy ? _("Removed by {moderator}", { moderator: li.dataset.removedBy }) : _("Removed");
    const when = part(li, "removed-when");
    const time = when && when.querySelector("time");
    if (when && time) {
      when.hidden = !li.dataset.removedAt;
      setTime(time, li.dataset.removedAt || "");
    }
  }
  const card = cardOf(li);
  if (!card) return;
  card.querySelectorAll("form[data-action-form]").forEach((form) => {
    const action = form.dataset.actionForm;
    if (action === "remove") form.hidden = removed;
    else if (action === "restore") form.hidden = !removed;
    else if (action === "approve") form.hidden = status !== "pending";
  });
}

// A status change that keeps the comment's words: only visible comments are counted.
export function changeStatus(li, status, info) {
  const was = li.dataset.status;
  applyStatus(li, status, info);
  if (was !== "visible" && status === "visible") setCount(state.count + 1);
  else if (was === "visible" && status !== "visible") setCount(state.count - 1);
}

function depthOf(list) {
  const owner = list.closest(".comment");
  return owner ? toInt(owner.dataset.depth, 0) + 1 : 0;
}

// Browsers with scroll anchoring keep the reader's place when content is added above;
// for the others, measure something on screen before and after and scroll by the difference.
function keepingPlace(insert) {
  if (anchoringSupported) return insert();
  const probe = document.elementFromPoint(window.innerWidth / 2, Math.min(window.innerHeight - 1, 80));
  const before = probe ? probe.getBoundingClientRect().top : null;
  insert();
  if (probe && probe.isConnected && before !== null) {
    const delta = probe.getBoundingClientRect().top - before;
    if (delta) window.scrollBy(0, delta);
  }
}

// A comment's link to its replies not on the page ("N more replies"), if it has one.
export function moreReplies(li) {
  return li.querySelector(":scope > a.more-replies");
}

export function setMoreReplies(li, count, after) {
  const link = moreReplies(li);
  if (!link) return;
  link.dataset.count = String(count);
  link.dataset.after = after || "";
  link.textContent = ngettext("{n} more reply", "{n} more replies", count);
  link.setAttribute("href", permalink(state.slug, li.dataset.id).replace("#", after ? "?after=" + encodeURIComponent(after) + "#" : "#"));
  link.hidden = count <= 0;
}

// Where a comment arriving live goes, by the paging rules (docs/architecture.md, "Paging"):
// the list to add it to and whether at its start, or null when it is not shown now. A reply
// to a comment on the page goes under it, unless some of that comment's replies are not loaded
// yet: then their "N more replies" count takes it. A new top-level comment goes on top in
// "newest" order (the reader keeps their place; "N new comments" leads to it), and at the end
// in "oldest" order once the reader has loaded the last page; "most recommended" order, a page
// further down the thread (?after=) or one conversation (a permalink) leaves it out. The reader's own comment always shows.
function placeFor(c, own) {
  if (c.parent) {
    const parentLi = commentEl(c.parent);
    if (!parentLi) return null;
    const more = moreReplies(parentLi);
    if (more && !more.hidden && !own) {
      setMoreReplies(parentLi, toInt(more.dataset.count, 0) + 1, more.dataset.after);
      return null;
    }
    return { list: parentLi.querySelector(":scope > ol.replies"), first: false };
  }
  if (own) return { list: state.thread, first: state.sort !== "oldest" };
  // In "most recommended" order a new comment (no votes yet) ranks among the last: the pages take it.
  if (state.target || state.paged || state.sort === "top") return null;
  if (state.sort === "oldest") return state.loadMore && !state.loadMore.hidden ? null : { list: state.thread, first: false };
  return { list: state.thread, first: true };
}

// Inserts a comment not yet on the page, or updates the one that is. Returns [element, isNew];
// element is null when the paging rules leave the comment off the page (it is counted).
export function placeComment(c, own = false) {
  const existing = commentEl(c.id);
  if (existing) {
    const was = existing.dataset.status;
    fillComment(existing, c);
    const now = existing.dataset.status;
    if (was !== "visible" && now === "visible") setCount(state.count + 1);
    else if (was === "visible" && now !== "visible") setCount(state.count - 1);
    return [existing, false];
  }
  const visible = (c.status || "visible") === "visible";
  const place = placeFor(c, own);
  if (!place || !place.list) {
    if (visible) setCount(state.count + 1);
    return [null, false];
  }
  const li = buildComment(c, depthOf(place.list));
  keepingPlace(() => {
    if (place.first) place.list.insertBefore(li, place.list.firstElementChild);
    else place.list.appendChild(li);
  });
  collapseIfLong(li);
  setCount(state.count + (visible ? 1 : 0));
  return [li, true];
}

// Comments read from the API ("Load more", "N more replies"): added at the end of the list,
// each with its own "N more replies"; one already on the page (it arrived live) is skipped.
export function appendLoaded(list, comments) {
  let added = 0;
  for (const c of comments) {
    if (commentEl(c.id)) continue;
    const li = buildComment(c, depthOf(list));
    list.appendChild(li);
    setMoreReplies(li, toInt(c.reply_count, 0), "");
    collapseIfLong(li);
    added += c.status === "pending" ? 0 : 1;
  }
  return added;
}

// --- long comments: "Read more" ---------------------------------------------------------

// A long comment (a 5,000-character one is metres of phone screen) shows its first lines and a
// "Read more" button; the collapsed height is the stylesheet's (.comment-body.is-collapsed).
function collapseIfLong(li) {
  const body = part(li, "body");
  const more = part(li, "read-more");
  if (!body || !more || body.hidden || more.dataset.expanded === "1") return;
  if (body.textContent.length < LONG_COMMENT_CHARS) {
    body.classList.remove("is-collapsed");
    more.hidden = true;
    return;
  }
  body.classList.add("is-collapsed");
  const overflows = body.scrollHeight > body.clientHeight + 8;
  body.classList.toggle("is-collapsed", overflows);
  more.hidden = !overflows;
  more.setAttribute("aria-expanded", "false");
  more.textContent = _("Read more");
}

// The whole thread at load: collapse every long one first, then measure them all (one layout,
// not one per comment).
function collapseLongComments() {
  const long = [];
  state.thread.querySelectorAll("li.comment").forEach((li) => {
    const body = part(li, "body");
    const more = part(li, "read-more");
    if (body && more && !body.hidden && body.textContent.length >= LONG_COMMENT_CHARS) {
      body.classList.add("is-collapsed");
      long.push([body, more]);
    }
  });
  const overflowing = long.map(([body]) => body.scrollHeight > body.clientHeight + 8);
  long.forEach(([body, more], i) => {
    body.classList.toggle("is-collapsed", overflowing[i]);
    more.hidden = !overflowing[i];
  });
}

function onReadMore(event) {
  const more = event.target.closest && event.target.closest('[data-field="read-more"]');
  if (!more || !state.root.contains(more)) return;
  const li = more.closest("li.comment");
  const body = li && part(li, "body");
  if (!body) return;
  const expand = more.getAttribute("aria-expanded") !== "true";
  body.classList.toggle("is-collapsed", !expand);
  more.dataset.expanded = expand ? "1" : "";
  more.setAttribute("aria-expanded", expand ? "true" : "false");
  more.textContent = expand ? _("Show less") : _("Read more");
  // Collapsing again from far down the comment: bring its start back into view.
  if (!expand && body.getBoundingClientRect().top < 0) body.scrollIntoView({ block: "start" });
}

// --- "N new comments" and highlighting --------------------------------------------------

let unseen = []; // newest last
const observer = "IntersectionObserver" in window
  ? new IntersectionObserver(onIntersect, { threshold: [0, 0.25, 0.5, 1] })
  : null;

function inView(li) {
  const card = cardOf(li) || li;
  const r = card.getBoundingClientRect();
  const vh = window.innerHeight || document.documentElement.clientHeight;
  const visible = Math.min(r.bottom, vh) - Math.max(r.top, 0);
  return visible > 0 && (visible >= r.height * 0.5 || visible >= vh * 0.3);
}

function flash(li) {
  const card = cardOf(li);
  if (!card) return;
  card.classList.remove("is-unseen");
  card.classList.add("is-new");
  setTimeout(() => card.classList.remove("is-new"), 3000);
}

function trackNew(li) {
  if (!document.hidden && inView(li)) {
    flash(li);
    return;
  }
  const card = cardOf(li);
  if (card) card.classList.add("is-unseen");
  unseen.push(li);
  if (observer && card) observer.observe(card);
  updateNewButton();
}

function markSeen(li) {
  const i = unseen.indexOf(li);
  if (i === -1) return;
  unseen.splice(i, 1);
  const card = cardOf(li);
  if (observer && card) observer.unobserve(card);
  flash(li);
  updateNewButton();
}

function onIntersect(entries) {
  if (document.hidden) return;
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    const li = entry.target.closest(".comment");
    if (li && inView(li)) markSeen(li);
  }
}

export function recheckUnseen() {
  if (document.hidden) return;
  unseen.slice().forEach((li) => {
    if (!li.isConnected) { markSeen(li); return; }
    if (inView(li)) markSeen(li);
  });
}

function updateNewButton() {
  const button = document.getElementById("new-comments");
  if (!button) return;
  unseen = unseen.filter((li) => li.isConnected);
  const n = unseen.length;
  if (!n) {
    button.hidden = true;
    return;
  }
  const target = unseen[unseen.length - 1];
  const above = (cardOf(target) || target).getBoundingClientRect().top < 0;
  const label = button.querySelector("[data-new-label]");
  const arrow = button.querySelector("[data-new-arrow]");
  if (label) label.textContent = ngettext("{n} new comment", "{n} new comments", n);
  if (arrow) arrow.textContent = above ? "↑" : "↓";
  button.hidden = false;
}

export function focusComment(li) {
  const card = cardOf(li) || li;
  if (!card.hasAttribute("tabindex")) card.setAttribute("tabindex", "-1");
  card.scrollIntoView({ block: "center", behavior: reducedMotion.matches ? "auto" : "smooth" });
  card.focus({ preventScroll: true });
  markSeen(li);
}

// --- events -----------------------------------------------------------------------------

function onComment(c) {
  if (!c || !c.id) return;
  const own = state.focusOnArrival === c.id || isOwnPost(c);
  const [li, isNew] = placeComment(c, own);
  if (!li) return;
  if (state.focusOnArrival === c.id) {
    state.focusOnArrival = null;
    focusComment(li);
    return;
  }
  if (isNew && c.status !== "pending" && !own) {
    announce(c);
    trackNew(li);
  }
}

// Our own post can arrive as an event just before its ack; it needs no announcement.
function isOwnPost(c) {
  const body = (c.body || "").trim();
  const name = (c.author && c.author.name) || "";
  for (const post of state.posts.values()) {
    if (!post.done && post.payload.name === name && post.payload.body.trim() === body) return true;
  }
  return false;
}

function onRemoved(msg) {
  const li = commentEl(msg.id);
  if (!li) { setCount(state.count - 1); return; } // only a visible comment is removed
  if (state.isMod) { changeStatus(li, "removed", msg); return; } // the text stays, marked removed
  const was = li.dataset.status;
  fillComment(li, { id: msg.id, status: "removed", author: {}, html: "" });
  if (was === "visible") setCount(state.count - 1);
}

// Its author edited it: the new text in place, "(edited)"; a comment not on the page (a part of
// the thread not loaded) gets it when it is loaded.
function onEdited(c) {
  const li = c && c.id ? commentEl(c.id) : null;
  if (!li) return;
  fillEdited(li, c);
  collapseIfLong(li);
}

// Its author deleted it: as a removal, with its own words in the tombstone.
function onDeleted(msg) {
  const li = commentEl(msg.id);
  if (!li) return;
  if (state.isMod) { changeStatus(li, "deleted", {}); return; }
  const was = li.dataset.status;
  fillComment(li, { id: msg.id, status: "deleted", author: {}, html: "" });
  if (was === "visible") setCount(state.count - 1);
}

// A comment not on the page (not loaded yet) is only counted: it shows where it always was
// when its part of the thread is loaded.
function onRestored(c) {
  if (!c || !c.id) return;
  if (!commentEl(c.id)) { setCount(state.count + 1); return; }
  placeComment(c);
}

// --- the thread's state: open, closed, hidden ------------------------------------------------

const STATE_OF_EVENT = { opened: "open", closed: "closed", hidden: "hidden" };
const STATE_SAID = {
  open: _("Comments are open again."),
  closed: _("Comments are closed."),
  hidden: _("Comments on this article are hidden."),
};

/* The page follows the thread's state: the CSS takes the composer, Reply and Post away while it
   is not open (data-thread-state), the note says why, and a form holding what the reader wrote
   stays where it is, text and all. Reopened, everything comes back as it was. */
export function setThreadState(next) {
  if (!STATE_SAID[next] || next === state.threadState) return;
  state.threadState = next;
  state.root.dataset.threadState = next;
  const note = state.root.querySelector("[data-thread-note]");
  if (note) {
    note.hidden = next === "open";
    if (next !== "open") note.textContent = next === "hidden" ? note.dataset.textHidden : note.dataset.textClosed;
  }
  keepWrittenForms(next);
  const forms = state.root.querySelector("[data-state-forms]");
  showThreadState(forms, next);
  // A result said about the state before (by this moderator) is out of date now.
  const bar = forms && forms.closest(".mod-bar");
  const said = bar && bar.querySelector('[data-field="action-result"]');
  if (said) said.textContent = "";
  say(document.getElementById("live-announcer"), STATE_SAID[next]);
}

// A sequenced event, in order.
export function applyEvent(msg) {
  switch (msg.type) {
    case "comment": onComment(msg.comment); break;
    case "removed": onRemoved(msg); break;
    case "restored": onRestored(msg.comment); break;
    case "edited": onEdited(msg.comment); break;
    case "deleted": onDeleted(msg); break;
    case "closed": case "opened": case "hidden": setThreadState(STATE_OF_EVENT[msg.type]); break;
    default: break; // a sequenced event this client does not know: it still advances seq
  }
}

// Held for moderation: only moderators are sent these.
export function onPending(c) {
  onComment(c);
}

export function startThread() {
  const button = document.getElementById("new-comments");
  if (button) {
    button.addEventListener("click", () => {
      const target = unseen[unseen.length - 1];
      if (target) focusComment(target);
    });
  }
  // The arrow says which way the newest unseen comment is; it changes as the reader scrolls.
  let scrollQueued = false;
  window.addEventListener("scroll", () => {
    if (scrollQueued || !unseen.length) return;
    scrollQueued = true;
    requestAnimationFrame(() => { scrollQueued = false; updateNewButton(); });
  }, { passive: true });
  state.root.addEventListener("click", onReadMore);
  collapseLongComments();
  updateTimes();
  setInterval(() => { if (!document.hidden) updateTimes(); }, 60000);
  setCount(state.count);
}
