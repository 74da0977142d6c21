/* Shared by live.js (article pages) and desk.js (the moderation desk), loaded before either:
   small helpers, relative times, and the moderation actions sent with fetch. */
"use strict";

window.Backchannel = (() => {
  function toInt(value, fallback) {
    const n = parseInt(value, 10);
    return Number.isFinite(n) ? n : fallback;
  }

  function plural(n, one, many) {
    return n + " " + (n === 1 ? one : many);
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") || "" : "";
  }

  // --- relative times ---------------------------------------------------------------------

  const dateFormat = (() => {
    // The same shape as the server's "2 Feb 2025", so server- and client-rendered times agree.
    try { return new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric" }); } catch (e) { return null; }
  })();
  const fullFormat = (() => {
    try { return new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" }); } catch (e) { return null; }
  })();

  function ago(iso, now) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    const seconds = Math.max(0, (now - t) / 1000); // a client clock behind the server's: "just now"
    if (seconds < 60) return "just now";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return plural(minutes, "minute ago", "minutes ago");
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return plural(hours, "hour ago", "hours ago");
    const days = Math.floor(hours / 24);
    if (days < 30) return plural(days, "day ago", "days ago");
    return dateFormat ? dateFormat.format(new Date(t)) : new Date(t).toDateString();
  }

  // The exact date and time, on hover, once.
  function titleTime(el, iso) {
    if (el.title || !fullFormat) return;
    const t = Date.parse(iso);
    if (!Number.isNaN(t)) el.title = fullFormat.format(new Date(t));
  }

  // --- actions: a reader's Report; a moderator's Remove, Restore, Approve, Dismiss, Ban ------

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

  async function sendAction(form) {
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

  function setActionBusy(form, busy) {
    form.dataset.busy = busy ? "1" : "";
    form.setAttribute("aria-busy", busy ? "true" : "false");
    form.querySelectorAll("button").forEach((b) => { b.disabled = busy; });
  }

  // Whose comment it is, so that a moderator's ban form names the reader (hidden without one).
  function setReader(el, ban, readerId) {
    el.dataset.readerId = readerId || "";
    if (!ban) return;
    ban.hidden = !readerId;
    const form = ban.querySelector("form[data-action-form]");
    if (form && readerId) form.setAttribute("action", "/api/readers/" + encodeURIComponent(readerId) + "/ban");
  }

  return { toInt, plural, csrfToken, ago, titleTime, sendAction, setActionBusy, setReader };
})();
