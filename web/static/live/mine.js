/* What a reader does to comments besides writing them: recommend one (a toggle, one per
   reader; counts arrive coalesced in `votes` frames), and edit or delete their own while the
   edit window lasts (the server says which are theirs, until when, in data-mine; a comment
   posted on this page joins them). Both need JavaScript: without it the counts still show. */

import { state } from "./state.js";
import { csrfToken, say, toInt } from "../lib/util.js";
import { _, formatNumber } from "../lib/i18n.js";
import { actionError, showResult } from "../lib/actions.js";
import { commentEl, part } from "./thread.js";

// id -> {until: ms since the epoch, body: the text as typed}
const mine = new Map();
const voted = new Set();
let windowMs = 0;

function readJson(text, fallback) {
  try { return JSON.parse(text || ""); } catch (e) { return fallback; }
}

// --- votes --------------------------------------------------------------------------------

export function showVotes(li, count) {
  const el = part(li, "votes");
  if (el && typeof count === "number") {
    el.dataset.count = String(count);
    el.textContent = formatNumber(count);
  }
  const button = part(li, "vote");
  if (!button) return;
  button.setAttribute("aria-pressed", voted.has(li.dataset.id) ? "true" : "false");
  // A reader cannot recommend their own comment: the count shows, the button does nothing.
  button.disabled = mine.has(li.dataset.id) || !!li.dataset.own;
}

// A `votes` frame: {id: count}, for comments on this page or not (yet).
export function onVotes(counts) {
  if (!counts || typeof counts !== "object") return;
  for (const [id, count] of Object.entries(counts)) {
    const li = commentEl(id);
    if (li && typeof count === "number") showVotes(li, count);
  }
}

async function send(method, url, body) {
  let res;
  try {
    res = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    return { ok: false, status: 0, data: {} };
  }
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  return { ok: res.ok && !(data && data.error), status: res.status, data: data || {} };
}

async function onVoteClick(button) {
  const li = button.closest("li.comment");
  if (!li || button.dataset.busy) return;
  const id = li.dataset.id;
  const up = !voted.has(id);
  const countEl = part(li, "votes");
  const before = countEl ? toInt(countEl.dataset.count, 0) : 0;
  // At once, as the reader expects; put back if the server refuses.
  if (up) voted.add(id); else voted.delete(id);
  showVotes(li, Math.max(0, before + (up ? 1 : -1)));
  button.dataset.busy = "1";
  const outcome = await send("POST", "/api/comments/" + encodeURIComponent(id) + "/vote", { up });
  delete button.dataset.busy;
  if (outcome.ok) {
    showVotes(li, outcome.data.votes);
    return;
  }
  if (up) voted.delete(id); else voted.add(id);
  showVotes(li, before);
  showResult(part(li, "action-result"), actionError(outcome), true);
}

// --- the reader's own comments --------------------------------------------------------------

// A comment this reader just posted (the ack, or the HTTP answer).
export function noteOwnComment(id, body) {
  if (!id || !windowMs) return;
  mine.set(id, { until: Date.now() + windowMs, body });
  const li = commentEl(id);
  if (li) showOwnTools(li);
}

// Edit and Delete on the reader's own comment while its window lasts; gone after.
export function showOwnTools(li) {
  const tools = part(li, "own-tools");
  const own = mine.get(li.dataset.id);
  if (own) li.dataset.own = "1";
  if (!tools) return;
  tools.hidden = !own || own.until <= Date.now() || li.dataset.status !== "visible";
  // An editor already open stays when the window ends: saving then says why it is too late.
  if (li.dataset.status !== "visible") closeEditor(li);
  showVotes(li);
}

function expireTools() {
  state.thread.querySelectorAll("li.comment[data-own]").forEach(showOwnTools);
}

function closeEditor(li) {
  const editor = li.querySelector(":scope > .comment-card > form.edit-form");
  if (editor) editor.remove();
  const body = part(li, "body");
  if (body && li.dataset.status === "visible") body.hidden = false;
}

function openEditor(li) {
  const own = mine.get(li.dataset.id);
  const body = part(li, "body");
  if (!own || !body || li.querySelector(":scope > .comment-card > form.edit-form")) return;
  const id = li.dataset.id;
  const form = document.createElement("form");
  form.className = "edit-form";
  const label = document.createElement("label");
  label.htmlFor = "edit-body-" + id;
  label.textContent = _("Edit your comment");
  const area = document.createElement("textarea");
  area.id = "edit-body-" + id;
  area.name = "body";
  area.rows = 4;
  area.required = true;
  area.value = own.body || "";
  const error = document.createElement("p");
  error.className = "form-error";
  error.setAttribute("role", "alert");
  const actions = document.createElement("div");
  actions.className = "form-actions";
  const save = document.createElement("button");
  save.type = "submit";
  save.className = "button button-primary button-small";
  save.textContent = _("Save");
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "button button-small";
  cancel.textContent = _("Cancel");
  actions.append(save, cancel);
  form.append(label, area, error, actions);
  body.hidden = true;
  body.after(form);
  area.focus();
  cancel.addEventListener("click", () => { closeEditor(li); part(li, "edit").focus(); });
  form.addEventListener("keydown", (event) => { if (event.key === "Escape") cancel.click(); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    const outcome = await send("PATCH", "/api/comments/" + encodeURIComponent(id), { body: area.value });
    save.disabled = false;
    if (!outcome.ok) {
      error.textContent = actionError(outcome);
      if (outcome.data.error && outcome.data.error.code === "edit_window_closed") {
        own.until = 0;
        showOwnTools(li);
        showResult(part(li, "action-result"), error.textContent, true);
      }
      return;
    }
    own.body = outcome.data.comment.body;
    closeEditor(li);
    // The `edited` event brings the new text to every page; this one shows it now.
    fillEdited(li, outcome.data.comment);
    showResult(part(li, "action-result"), _("Your comment was changed."));
  });
}

async function onDelete(li) {
  if (!window.confirm(_("Delete your comment? Replies to it stay."))) return;
  const outcome = await send("DELETE", "/api/comments/" + encodeURIComponent(li.dataset.id));
  if (!outcome.ok) {
    showResult(part(li, "action-result"), actionError(outcome), true);
    if (outcome.data.error && outcome.data.error.code === "edit_window_closed") {
      mine.get(li.dataset.id).until = 0;
      showOwnTools(li);
    }
    return;
  }
  say(document.getElementById("live-announcer"), _("Your comment was deleted."));
}

// An edited comment's new text and "(edited)" (from the event, or this reader's own answer).
export function fillEdited(li, c) {
  const body = part(li, "body");
  // comment.html is produced by the server's sanitiser: the one place HTML is inserted.
  if (body && li.dataset.status === "visible") body.innerHTML = c.html || "";
  showEditedMark(li, c.edited_at);
  const own = mine.get(li.dataset.id);
  if (own && typeof c.body === "string") own.body = c.body;
}

export function showEditedMark(li, editedAt) {
  const mark = part(li, "edited");
  if (!mark) return;
  mark.hidden = !editedAt;
  if (editedAt) mark.setAttribute("title", new Date(editedAt).toLocaleString());
}

export function startMine() {
  const root = state.root;
  windowMs = Math.max(0, toInt(root.dataset.editWindow, 0)) * 1000;
  for (const id of readJson(root.dataset.myVotes, [])) voted.add(id);
  const own = readJson(root.dataset.mine, {});
  for (const [id, info] of Object.entries(own)) mine.set(id, { until: Date.parse(info.until), body: info.body });
  state.thread.querySelectorAll("li.comment").forEach((li) => {
    if (mine.has(li.dataset.id)) showOwnTools(li);
    else if (voted.has(li.dataset.id)) showVotes(li);
  });
  root.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    const button = target && target.closest("button[data-field]");
    if (!button || !state.thread.contains(button)) return;
    const li = button.closest("li.comment");
    if (!li) return;
    if (button.dataset.field === "vote") onVoteClick(button);
    else if (button.dataset.field === "edit") openEditor(li);
    else if (button.dataset.field === "delete") onDelete(li);
  });
  if (windowMs) setInterval(expireTools, 5000);
}
