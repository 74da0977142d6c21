/* Backchannel: keeps the server-rendered comment thread live over a WebSocket.
 *
 * The page works without this file (every form posts). With it:
 *   - events arrive over /articles/{slug}/live and are applied in seq order, each once;
 *     a gap means reconnect with since=<last seq>, a reset means reload the page;
 *   - posts go over the socket (ack/error by ref), falling back to fetch, then to a plain
 *     form submit;
 *   - new comments are built by cloning <template id="comment-template">, which the server
 *     renders from the same Jinja macro as every other comment;
 *   - the small action forms (a reader's Report; on a moderator's page, data-moderator="1",
 *     Remove / Restore / Approve / Ban author and the pre-moderation switch) are sent with
 *     fetch and answered in place. A moderator's page also keeps a removed comment's text,
 *     dimmed and marked "Removed by NAME".
 *
 * Reader text only ever reaches the DOM through textContent; the one innerHTML is
 * comment.html, which the server has already made safe.
 */
(function () {
  "use strict";
  const { toInt, plural, csrfToken, ago, titleTime, sendAction, setActionBusy, setReader: setBanReader } =
    window.Backchannel;

  const root = document.getElementById("comments");
  const thread = document.getElementById("thread");
  const template = document.getElementById("comment-template");
  if (!root || !thread || !template || !("content" in template)) return;

  // --- configuration (data attributes on #comments) ---------------------------------------

  const slug = root.dataset.slug || "";
  const liveUrl = root.dataset.liveUrl || "";
  const apiUrl = root.dataset.apiUrl || "/api/articles/" + encodeURIComponent(slug) + "/comments";
  let lastSeq = toInt(root.dataset.seq, 0);
  let epoch = root.dataset.epoch || "";
  let count = toInt(root.dataset.count, thread.querySelectorAll('.comment[data-status="visible"]').length);
  // A moderator's page (the server renders it so): removed text stays, moderation tools show.
  const isMod = root.dataset.moderator === "1";
  const me = root.dataset.moderatorName || "";

  const TOMBSTONE = "This comment was removed by a moderator.";
  const ACK_TIMEOUT_MS = 8000;
  const MAX_FRAME_BYTES = 64 * 1024 - 1024; // the server's cap, less room for the JSON envelope
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  const CLOSE_SERVICE_RESTART = 1012;
  const CLOSE_TOO_SLOW = 4000;
  const CLOSE_SESSION_ENDED = 4003; // a moderator's session ended: this page is a reader's again
  const KEY_NAME = "backchannel.name";
  const KEY_ABOUT = "backchannel.about";
  const KEY_DRAFTS = "backchannel.drafts." + slug;
  const KEY_RESET_AT = "backchannel.reset-at." + slug;
  const KEY_PLAIN_POST = "backchannel.plain-post." + slug;

  const reducedMotion = window.matchMedia ? window.matchMedia("(prefers-reduced-motion: reduce)") : { matches: false };
  const anchoringSupported = !!(window.CSS && CSS.supports && CSS.supports("overflow-anchor", "auto"));

  const statusEl = root.querySelector("[data-live-status]");
  const connEl = root.querySelector("[data-conn]");
  const readersEl = root.querySelector("[data-readers]");
  const emptyEl = root.querySelector("[data-thread-empty]");
  const announcer = document.getElementById("live-announcer");
  const newButton = document.getElementById("new-comments");
  const newLabel = newButton && newButton.querySelector("[data-new-label]");
  const newArrow = newButton && newButton.querySelector("[data-new-arrow]");

  // --- small helpers ----------------------------------------------------------------------

  function storage(kind) {
    try {
      const s = window[kind];
      const probe = "backchannel.probe";
      s.setItem(probe, "1");
      s.removeItem(probe);
      return s;
    } catch (e) {
      return null; // private mode, disabled storage, sandboxed frame
    }
  }
  const local = storage("localStorage");
  const session = storage("sessionStorage");

  function getItem(store, key) {
    try { return store ? store.getItem(key) : null; } catch (e) { return null; }
  }
  function setItem(store, key, value) {
    try { if (store) store.setItem(key, value); } catch (e) { /* quota: not worth failing over */ }
  }
  function removeItem(store, key) {
    try { if (store) store.removeItem(key); } catch (e) { /* ignore */ }
  }

  function newRef() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    (window.crypto || {}).getRandomValues ? crypto.getRandomValues(bytes) : bytes.forEach((_, i) => { bytes[i] = Math.random() * 256; });
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function field(form, name) {
    const el = form.elements.namedItem(name);
    return el && "value" in el ? el : null;
  }

  function commentEl(id) {
    if (!id) return null;
    const el = document.getElementById("c-" + id);
    return el && el.classList.contains("comment") ? el : null;
  }

  function cardOf(li) {
    return li.querySelector(":scope > .comment-card");
  }

  function part(li, name) {
    const card = cardOf(li);
    return card ? card.querySelector('[data-field="' + name + '"]') : null;
  }

  // --- relative times ---------------------------------------------------------------------


  function setTime(timeEl, now) {
    const iso = timeEl.getAttribute("datetime");
    if (!iso) return;
    const text = ago(iso, now);
    if (text && timeEl.textContent !== text) timeEl.textContent = text;
    titleTime(timeEl, iso);
  }

  function updateTimes() {
    const now = Date.now();
    thread.querySelectorAll('time[data-field="time"], time[data-ago]').forEach((el) => setTime(el, now));
  }

  // --- counts, status, announcements ------------------------------------------------------

  function setCount(n) {
    count = Math.max(0, n);
    root.dataset.count = String(count);
    const text = plural(count, "comment", "comments");
    document.querySelectorAll("[data-comment-count]").forEach((el) => { el.textContent = text; });
    if (emptyEl) emptyEl.hidden = thread.querySelector(".comment") !== null;
  }

  let connState = "connecting";
  let readers = null;
  let countdownTimer = 0;
  let retryAt = 0;

  function showConn(state) {
    connState = state;
    if (!statusEl || !connEl) return;
    statusEl.hidden = false;
    clearInterval(countdownTimer);
    countdownTimer = 0;
    connEl.dataset.state = state;
    if (state === "live") connEl.textContent = "● Live";
    else if (state === "connecting") connEl.textContent = "Connecting…";
    else if (state === "reconnecting") connEl.textContent = "Reconnecting…";
    else if (state === "offline") {
      const tick = () => {
        const s = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
        connEl.textContent = navigator.onLine === false && retryAt === 0
          ? "Offline"
          : "Offline — retrying in " + s + "s";
      };
      tick();
      countdownTimer = setInterval(tick, 1000);
    } else if (state === "stopped") connEl.textContent = "Live updates unavailable";
    showReaders();
  }

  function showReaders() {
    if (!readersEl) return;
    const visible = connState === "live" && typeof readers === "number" && readers > 0;
    readersEl.hidden = !visible;
    if (visible) readersEl.textContent = readers + " reading now";
  }

  let announceQueue = [];
  let announceTimer = 0;

  function announce(comment) {
    const name = (comment.author && comment.author.name) || "someone";
    announceQueue.push({ name, reply: !!comment.parent });
    clearTimeout(announceTimer);
    // Several arriving together (catch-up after a reconnect) become one announcement.
    announceTimer = setTimeout(flushAnnouncements, 700);
  }

  function flushAnnouncements() {
    const items = announceQueue;
    announceQueue = [];
    if (!announcer || !items.length) return;
    let text;
    if (items.length === 1) {
      text = (items[0].reply ? "New reply from " : "New comment from ") + items[0].name;
    } else {
      const names = [...new Set(items.map((i) => i.name))];
      const shown = names.slice(0, 3);
      let who = shown.length === 1 ? shown[0] : shown.slice(0, -1).join(", ") + " and " + shown[shown.length - 1];
      if (names.length > 3) who = shown.join(", ") + " and others";
      text = items.length + " new comments, from " + who;
    }
    // Clear first so repeating the same sentence is announced again.
    announcer.textContent = "";
    setTimeout(() => { announcer.textContent = text; }, 50);
  }

  // --- building and updating comments -----------------------------------------------------

  const ID_ATTRS = ["id", "for", "aria-labelledby", "aria-describedby", "aria-controls"];

  // The template is rendered for id "", so every per-comment id token ends in "-".
  function fixIds(el, id) {
    const nodes = [el, ...el.querySelectorAll("*")];
    for (const node of nodes) {
      for (const attr of ID_ATTRS) {
        const value = node.getAttribute(attr);
        if (!value) continue;
        node.setAttribute(attr, value.split(/\s+/).map((t) => (t.endsWith("-") ? t + id : t)).join(" "));
      }
    }
  }

  // The page leaves most reply and report forms out (they made big threads slow to lay out;
  // see _comment.html): a comment's details get theirs from the template's blank comment
  // when they open.
  function ensureForm(details) {
    const kind = details.matches("details.reply") ? "reply" : "report";
    const present = details.querySelector("form");
    const li = details.closest("li.comment");
    if (present || !li) return present;
    const blank = template && template.content.querySelector(`li.comment > .comment-card details.${kind} form`);
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

  // A reply form cloned from the template's blank comment: it answers comment id, starts empty.
  function prepareReplyForm(form, id) {
    form.dataset.parent = id;
    const parentInput = field(form, "parent");
    if (parentInput) parentInput.value = id;
    const body = field(form, "body");
    if (body) body.value = "";
    const err = form.querySelector("[data-form-error]");
    if (err) err.textContent = "";
    prefillIdentity(form);
  }

  function buildComment(c, depth) {
    const li = template.content.querySelector("li.comment").cloneNode(true);
    fixIds(li, c.id);
    li.dataset.id = c.id;
    li.dataset.parent = c.parent || "";
    li.dataset.depth = String(depth);
    const permalink = part(li, "permalink");
    if (permalink) permalink.setAttribute("href", "#c-" + c.id);
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
    const parentName = parentLi && parentLi.dataset.status !== "removed" ? (part(parentLi, "name") || {}).textContent : "";
    line.hidden = depth < 5 || !parentName;
    if (line.hidden) return;
    const link = line.querySelector("a");
    if (link) link.setAttribute("href", "#c-" + parentId);
    const nameEl = line.querySelector('[data-field="inreply-name"]');
    if (nameEl) nameEl.textContent = parentName;
  }

  // The clone's forms were rendered for id "": point them at this comment.
  function wireActionForms(li, id) {
    const card = cardOf(li);
    if (!card) return;
    const enc = encodeURIComponent(id);
    card.querySelectorAll("form[data-action-form]").forEach((form) => {
      const action = form.dataset.actionForm;
      if (action !== "ban") form.setAttribute("action", "/api/comments/" + enc + "/" + action);
      const next = field(form, "next");
      if (next) next.value = location.pathname + "#c-" + id;
      const commentId = field(form, "comment_id");
      if (commentId) commentId.value = id;
    });
  }

  // Moderator pages: whose comment it is, so the ban form can name the reader.
  function setReader(li, readerId) {
    setBanReader(li, part(li, "ban"), readerId);
  }

  function setReports(li, n) {
    const flag = part(li, "reports");
    if (!flag) return;
    const reports = toInt(n, 0);
    flag.hidden = reports <= 0;
    flag.textContent = "Reported " + plural(reports, "time", "times");
  }

  function fillComment(li, c) {
    const status = c.status || "visible";
    // Readers lose a removed comment's words; a moderator keeps them, dimmed.
    const removed = status === "removed" && !isMod;
    const author = c.author || {};
    const name = removed ? "" : author.name || "";
    const about = removed ? "" : author.about || "";

    if (isMod) {
      if ("reader_id" in c) setReader(li, c.reader_id);
      if ("report_count" in c) setReports(li, c.report_count);
    }
    const nameEl = part(li, "name");
    if (nameEl) { nameEl.textContent = name; nameEl.hidden = removed; }
    const aboutEl = part(li, "about");
    if (aboutEl) { aboutEl.textContent = about; aboutEl.hidden = !about; }
    const replyTo = part(li, "reply-to");
    if (replyTo) replyTo.textContent = name ? " to " + name : "";
    const timeEl = part(li, "time");
    if (timeEl && c.created_at) {
      timeEl.setAttribute("datetime", c.created_at);
      timeEl.removeAttribute("title");
      setTime(timeEl, Date.now());
    }
    const body = part(li, "body");
    // comment.html is produced by the server's sanitiser: the one place HTML is inserted.
    if (body) body.innerHTML = removed ? "" : c.html || "";
    applyStatus(li, status, c);
  }

  // `info` may carry removed_by / removed_at (moderator pages show who removed it and when).
  function applyStatus(li, status, info) {
    const removed = status === "removed";
    const hideText = removed && !isMod;
    li.dataset.status = status;
    const body = part(li, "body");
    if (body) body.hidden = hideText;
    const tomb = part(li, "tombstone");
    if (tomb) { tomb.hidden = !hideText; tomb.textContent = TOMBSTONE; }
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
    if (isMod) applyModStatus(li, status, info || {});
    const card = cardOf(li);
    const nameEl = part(li, "name");
    if (card && nameEl && tomb) card.setAttribute("aria-labelledby", hideText ? tomb.id : nameEl.id);
  }

  function applyModStatus(li, status, info) {
    const removed = status === "removed";
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
      if (by) by.textContent = li.dataset.removedBy ? "Removed by " + li.dataset.removedBy : "Removed";
      const when = part(li, "removed-when");
      const time = when && when.querySelector("time");
      if (when && time) {
        when.hidden = !li.dataset.removedAt;
        time.setAttribute("datetime", li.dataset.removedAt || "");
        time.removeAttribute("title");
        if (li.dataset.removedAt) setTime(time, Date.now());
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
  function changeStatus(li, status, info) {
    const was = li.dataset.status;
    applyStatus(li, status, info);
    if (was !== "visible" && status === "visible") setCount(count + 1);
    else if (was === "visible" && status !== "visible") setCount(count - 1);
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

  // Inserts a comment not yet on the page. Returns [element, isNew].
  function placeComment(c) {
    const existing = commentEl(c.id);
    if (existing) {
      const was = existing.dataset.status;
      fillComment(existing, c);
      const now = existing.dataset.status;
      if (was !== "visible" && now === "visible") setCount(count + 1);
      else if (was === "visible" && now !== "visible") setCount(count - 1);
      return [existing, false];
    }
    let list = null;
    if (c.parent) {
      const parentLi = commentEl(c.parent);
      list = parentLi ? parentLi.querySelector(":scope > ol.replies") : null;
    }
    const li = buildComment(c, list ? depthOf(list) : 0);
    keepingPlace(() => {
      if (list) list.appendChild(li);                    // replies: oldest first
      else thread.insertBefore(li, thread.firstElementChild); // top level: newest first
    });
    if ((c.status || "visible") === "visible") setCount(count + 1);
    else setCount(count);
    return [li, true];
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

  function recheckUnseen() {
    if (document.hidden) return;
    unseen.slice().forEach((li) => {
      if (!li.isConnected) { markSeen(li); return; }
      if (inView(li)) markSeen(li);
    });
  }

  function updateNewButton() {
    if (!newButton) return;
    unseen = unseen.filter((li) => li.isConnected);
    const n = unseen.length;
    if (!n) {
      newButton.hidden = true;
      return;
    }
    const target = unseen[unseen.length - 1];
    const above = (cardOf(target) || target).getBoundingClientRect().top < 0;
    if (newLabel) newLabel.textContent = plural(n, "new comment", "new comments");
    if (newArrow) newArrow.textContent = above ? "↑" : "↓";
    newButton.hidden = false;
  }

  function focusComment(li) {
    const card = cardOf(li) || li;
    if (!card.hasAttribute("tabindex")) card.setAttribute("tabindex", "-1");
    card.scrollIntoView({ block: "center", behavior: reducedMotion.matches ? "auto" : "smooth" });
    card.focus({ preventScroll: true });
    markSeen(li);
  }

  if (newButton) {
    newButton.addEventListener("click", () => {
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

  // --- events -----------------------------------------------------------------------------

  let focusOnArrival = null; // id of our own post, acked before its event arrived

  function onComment(c) {
    if (!c || !c.id) return;
    const [li, isNew] = placeComment(c);
    if (focusOnArrival === c.id) {
      focusOnArrival = null;
      focusComment(li);
      return;
    }
    if (isNew && c.status !== "pending" && !isOwnPost(c)) {
      announce(c);
      trackNew(li);
    }
  }

  // Our own post can arrive as an event just before its ack; it needs no announcement.
  function isOwnPost(c) {
    const body = (c.body || "").trim();
    const name = (c.author && c.author.name) || "";
    for (const post of posts.values()) {
      if (!post.done && post.payload.name === name && post.payload.body.trim() === body) return true;
    }
    return false;
  }

  function onRemoved(msg) {
    const li = commentEl(msg.id);
    if (!li) return;
    if (isMod) { changeStatus(li, "removed", msg); return; } // the text stays, marked removed
    const was = li.dataset.status;
    fillComment(li, { id: msg.id, status: "removed", author: {}, html: "" });
    if (was === "visible") setCount(count - 1);
  }

  function onRestored(c) {
    if (!c || !c.id) return;
    if (!commentEl(c.id)) { onComment(c); return; }
    placeComment(c);
  }

  function applyEvent(msg) {
    switch (msg.type) {
      case "comment": onComment(msg.comment); break;
      case "removed": onRemoved(msg); break;
      case "restored": onRestored(msg.comment); break;
      default: break; // a sequenced event this client does not know: it still advances seq
    }
  }

  // --- the socket -------------------------------------------------------------------------

  let ws = null;
  let welcomed = false;
  let attempt = 0;
  let gapStreak = 0;
  let retryTimer = 0;
  let stopped = false;

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams({ since: String(lastSeq) });
    if (epoch) params.set("epoch", epoch);
    return scheme + "//" + location.host + liveUrl + (liveUrl.includes("?") ? "&" : "?") + params;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    retryAt = 0;
    if (stopped || ws || !liveUrl) return;
    let sock;
    try {
      sock = new WebSocket(socketUrl());
    } catch (e) {
      scheduleReconnect(false);
      return;
    }
    ws = sock;
    welcomed = false;
    showConn(connState === "connecting" ? "connecting" : "reconnecting");
    sock.addEventListener("message", (ev) => {
      if (ws !== sock) return; // a socket we already gave up on
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg && typeof msg === "object") onFrame(msg, sock);
    });
    sock.addEventListener("close", (ev) => {
      if (ws !== sock) return;
      ws = null;
      welcomed = false;
      onSocketLost();
      if (isMod && ev.code === CLOSE_SESSION_ENDED) { resetThread(); return; } // reload as a reader
      const quick = ev.code === CLOSE_SERVICE_RESTART || ev.code === CLOSE_TOO_SLOW;
      scheduleReconnect(quick);
    });
  }

  function drop(sock) {
    if (ws === sock) { ws = null; welcomed = false; }
    try { sock.close(1000); } catch (e) { /* already closing */ }
  }

  function scheduleReconnect(quick) {
    if (stopped) return;
    clearTimeout(retryTimer);
    let delay;
    if (quick) {
      delay = 100 + Math.random() * 400;
    } else {
      // Full jitter: anywhere between 0 and the exponential ceiling.
      delay = Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
      attempt = Math.min(attempt + 1, 16);
    }
    retryAt = Date.now() + delay;
    retryTimer = setTimeout(connect, delay);
    showConn(delay >= 1000 || navigator.onLine === false ? "offline" : "reconnecting");
  }

  function reconnectNow() {
    if (stopped || ws) return;
    connect();
  }

  function onFrame(msg, sock) {
    switch (msg.type) {
      case "welcome": onWelcome(msg); return;
      case "presence":
        if (typeof msg.readers === "number") { readers = msg.readers; showReaders(); }
        return;
      case "ack": onAck(msg); return;
      case "pending": if (isMod) onComment(msg.comment); return; // held for moderation (moderators only)
      case "error": onError(msg); return;
      case "reset": resetThread(); return;
      default: break;
    }
    if (typeof msg.seq !== "number") return;
    if (msg.seq <= lastSeq) return; // already applied
    if (msg.seq > lastSeq + 1) {
      // A gap: something was missed. Reconnect and let the server replay from lastSeq.
      gapStreak += 1;
      drop(sock);
      scheduleReconnect(gapStreak <= 2);
      return;
    }
    try {
      applyEvent(msg);
    } catch (e) {
      console.error("backchannel: could not apply event", msg.seq, e);
    }
    lastSeq = msg.seq;
    root.dataset.seq = String(lastSeq);
    gapStreak = 0;
  }

  function onWelcome(msg) {
    if (msg.epoch && epoch && msg.epoch !== epoch) { resetThread(); return; }
    if (typeof msg.seq === "number" && msg.seq < lastSeq) { resetThread(); return; }
    if (msg.epoch) { epoch = msg.epoch; root.dataset.epoch = epoch; }
    welcomed = true;
    attempt = 0;
    if (typeof msg.readers === "number") readers = msg.readers;
    showConn("live");
  }

  function onSocketLost() {
    // A post sent on a socket that died may or may not have been stored: let HTTP retry
    // it under the same ref (the server deduplicates by ref).
    for (const post of posts.values()) {
      if (post.sent && !post.done) fallback(post);
    }
  }

  function resetThread() {
    saveAllDrafts();
    const now = Date.now();
    const last = toInt(getItem(session, KEY_RESET_AT), 0);
    if (ws) drop(ws);
    stopped = true;
    clearTimeout(retryTimer);
    showConn("reconnecting");
    // Never reload in a tight loop if the server keeps asking for it.
    const wait = now - last < 10000 ? 10000 : 0;
    setTimeout(() => {
      setItem(session, KEY_RESET_AT, String(Date.now()));
      location.reload();
    }, wait);
  }

  // --- posting ----------------------------------------------------------------------------

  const posts = new Map(); // ref -> {ref, form, payload, timer, sent, viaHttp, done}

  function readForm(form) {
    const get = (n) => { const el = field(form, n); return el ? el.value : ""; };
    return {
      name: get("name").trim(),
      about: get("about").trim(),
      body: get("body"),
      parent: get("parent") || "",
    };
  }

  function showFormError(form, text) {
    const el = form.querySelector("[data-form-error]");
    if (!el) return;
    el.classList.remove("is-note");
    el.textContent = text || "";
  }

  function showFormNote(form, text) {
    const el = form.querySelector("[data-form-error]");
    if (!el) return;
    el.classList.add("is-note");
    el.textContent = text;
  }

  function setBusy(form, busy) {
    const button = form.querySelector("[data-submit]") || form.querySelector('[type="submit"]');
    form.dataset.busy = busy ? "1" : "";
    form.setAttribute("aria-busy", busy ? "true" : "false");
    if (!button) return;
    if (busy) {
      if (!button.dataset.label) button.dataset.label = button.textContent;
      button.textContent = "Posting…";
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
    const payload = readForm(form);
    const bodyEl = field(form, "body");
    const nameEl = field(form, "name");
    if (!payload.body.trim()) {
      showFormError(form, "Please write your comment first.");
      if (bodyEl) bodyEl.focus();
      return;
    }
    if (!payload.name) {
      showFormError(form, "Please add your name.");
      if (nameEl) nameEl.focus();
      return;
    }
    rememberIdentity(payload.name, payload.about);
    showFormError(form, "");
    setBusy(form, true);
    const post = { ref: newRef(), form, payload, timer: 0, sent: false, viaHttp: false, done: false };
    posts.set(post.ref, post);
    if (ws && welcomed && ws.readyState === WebSocket.OPEN) {
      sendPost(post, ws);
      post.timer = setTimeout(() => fallback(post), ACK_TIMEOUT_MS);
    } else {
      fallback(post);
    }
  }

  function sendPost(post, sock) {
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
      sock.send(frame);
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
      res = await fetch(apiUrl, {
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
      if (post.done) return;
      if (navigator.onLine === false) {
        // A plain form post would only reach the browser's own error page.
        fail(post, { code: "offline" });
        return;
      }
      submitPlainly(post);
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
      submitPlainly(post);
    }
  }

  // Last resort: the form as it would post without JavaScript (the server answers with a
  // redirect to the new comment, or the page again with the error).
  function submitPlainly(post) {
    post.done = true;
    posts.delete(post.ref);
    const form = post.form;
    let refInput = field(form, "ref");
    if (!refInput) {
      refInput = document.createElement("input");
      refInput.type = "hidden";
      refInput.name = "ref";
      form.appendChild(refInput);
    }
    refInput.value = post.ref;
    // The draft stays until the redirect to the new comment shows the post went through.
    setItem(session, KEY_PLAIN_POST, JSON.stringify({ parent: post.payload.parent || "" }));
    stopped = true;
    HTMLFormElement.prototype.submit.call(form);
  }

  function succeed(post, id, comment, pending) {
    if (post.done) return;
    post.done = true;
    clearTimeout(post.timer);
    posts.delete(post.ref);
    const form = post.form;
    setBusy(form, false);
    const bodyEl = field(form, "body");
    if (bodyEl) bodyEl.value = "";
    clearDraft(post.payload.parent);

    if (comment && comment.id && !commentEl(comment.id)) placeComment(comment);
    const li = commentEl(id);
    if (pending && !li) {
      // Held for moderation and not shown to us: say so where the reader is looking.
      showFormNote(form, "Thanks — your comment will appear once a moderator has approved it.");
      return;
    }
    showFormError(form, "");
    const details = form.closest("details.reply");
    if (details) details.open = false;
    if (li) focusComment(li);
    else if (id) focusOnArrival = id;
  }

  function fail(post, error) {
    if (post.done) return;
    post.done = true;
    clearTimeout(post.timer);
    posts.delete(post.ref);
    setBusy(post.form, false);
    showFormError(post.form, friendlyError(error));
  }

  function onAck(msg) {
    const post = msg.ref ? posts.get(msg.ref) : null;
    if (!post) return;
    const pending = msg.seq === null || msg.seq === undefined || (msg.comment && msg.comment.status === "pending");
    succeed(post, msg.id, msg.comment || null, pending);
  }

  function onError(msg) {
    const post = msg.ref ? posts.get(msg.ref) : null;
    if (post) { fail(post, msg); return; }
    console.warn("backchannel:", msg.code, msg.message);
    if (msg.code === "not_found") {
      // The thread itself is gone: nothing to stay connected for.
      stopped = true;
      if (ws) drop(ws);
      showConn("stopped");
    }
  }

  function friendlyError(err) {
    const code = err && err.code;
    const message = (err && err.message) || "";
    switch (code) {
      case "empty": return message || "Please write your comment first.";
      case "too_long": return message || "That is longer than we can take. Please shorten it.";
      case "invalid_message": return "Something went wrong sending that. Please try again.";
      case "not_found": return "The comment you are replying to is no longer available.";
      case "rate_limited": {
        const s = toInt(err.retry_after, 0);
        return s > 0
          ? "You are posting quickly. Please wait " + plural(s, "second", "seconds") + " and try again."
          : "You are posting quickly. Please wait a moment and try again.";
      }
      case "banned": return "You can no longer post comments here.";
      case "forbidden": return "Your session has expired. Please reload the page and try again.";
      case "unavailable": return "Comments are briefly unavailable. Your text is kept; please try again in a moment.";
      case "offline": return "You seem to be offline. Your text is kept; please try again when you are connected.";
      default: return message || "Something went wrong. Please try again.";
    }
  }

  // --- actions: a reader's Report; a moderator's Remove, Restore, Approve, Ban, pre-moderation

  function actionError(outcome) {
    const err = outcome.data && outcome.data.error;
    if (outcome.status === 0) return "Could not reach the server. Please try again.";
    if (outcome.status === 401) return "Your moderator session has ended. Please log in again.";
    if (err && err.code === "rate_limited") return err.message || "Too many at once. Please wait a moment.";
    if (outcome.status === 403 && !isMod) return "Your session has expired. Please reload the page and try again.";
    return (err && err.message) || "That did not work. Please try again.";
  }

  function showResult(el, text, isError) {
    if (!el) return;
    el.classList.toggle("is-error", !!isError);
    el.textContent = text || "";
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
        showResult(resultEl, data.already ? "You have already reported this comment. Thank you."
          : "Thank you — a moderator will take a look.");
        return;
      }
      case "remove":
        if (same) placeComment(data.comment);
        else changeStatus(li, "removed", { removed_by: me, removed_at: now });
        showResult(resultEl, "Removed. Readers see that a moderator removed it.");
        break;
      case "restore":
      case "approve":
        if (same) placeComment(data.comment);
        else changeStatus(li, "visible", {});
        showResult(resultEl, action === "approve" ? "Approved — readers can see it now." : "Restored.");
        break;
      case "ban": {
        const details = form.closest("details");
        if (details) details.open = false;
        const duration = form.elements.namedItem("duration");
        const label = duration && duration.selectedOptions && duration.selectedOptions[0]
          ? duration.selectedOptions[0].textContent.trim().toLowerCase() : "";
        const ip = form.elements.namedItem("ip");
        const how = !label || label === "for good" ? " for good" : " for " + label;
        showResult(resultEl, "Author banned" + how + (ip && ip.checked ? ", with their IP address." : "."));
        break;
      }
      case "premoderation": {
        const sent = form.elements.namedItem("enabled");
        const on = typeof data.enabled === "boolean" ? data.enabled
          : typeof data.premoderation === "boolean" ? data.premoderation : !!sent && sent.value === "1";
        setPremoderation(form, on);
        showResult(resultEl, on ? "Pre-moderation is on." : "Pre-moderation is off.");
        return;
      }
      default:
        showResult(resultEl, "Done.");
    }
    if (li) keepFocus(cardOf(li) || li, ".mod-tools form:not([hidden]) button");
  }

  function setPremoderation(form, on) {
    const bar = form.closest(".mod-bar") || form;
    const next = form.elements.namedItem("enabled");
    if (next) next.value = on ? "0" : "1";
    const sw = bar.querySelector('[data-field="premod-switch"]');
    if (sw) sw.setAttribute("aria-pressed", on ? "true" : "false");
    const state = bar.querySelector('[data-field="premod-state"]');
    if (state) state.textContent = on ? "on" : "off";
    const note = bar.querySelector('[data-field="premod-note"]');
    if (note) note.textContent = on ? "New comments wait for a moderator before readers see them." : "New comments appear at once.";
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
    if (!outcome.ok) { showResult(resultEl, actionError(outcome), true); return; }
    onActionDone(action, form, li, outcome.data, resultEl);
  }

  root.addEventListener("submit", onActionSubmit);

  // --- identity and drafts ----------------------------------------------------------------

  function prefillIdentity(scope) {
    const name = getItem(local, KEY_NAME) || "";
    const about = getItem(local, KEY_ABOUT) || "";
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
    setItem(local, KEY_NAME, name);
    if (about) setItem(local, KEY_ABOUT, about);
    else removeItem(local, KEY_ABOUT);
    // Keep every other form on the page in step with what the reader now calls themselves.
    root.querySelectorAll("form[data-comment-form]").forEach((form) => {
      const n = field(form, "name");
      const a = field(form, "about");
      if (n && !n.value) n.value = name;
      if (a && !a.value) a.value = about;
    });
  }

  function loadDrafts() {
    try { return JSON.parse(getItem(session, KEY_DRAFTS) || "{}") || {}; } catch (e) { return {}; }
  }

  function saveDraft(parent, text) {
    const drafts = loadDrafts();
    if (text && text.trim()) drafts[parent || ""] = text;
    else delete drafts[parent || ""];
    if (Object.keys(drafts).length) setItem(session, KEY_DRAFTS, JSON.stringify(drafts));
    else removeItem(session, KEY_DRAFTS);
  }

  function clearDraft(parent) {
    saveDraft(parent, "");
  }

  function saveAllDrafts() {
    root.querySelectorAll("form[data-comment-form]").forEach((form) => {
      const body = field(form, "body");
      if (body && body.value.trim()) saveDraft(form.dataset.parent || "", body.value);
    });
  }

  function restoreDrafts() {
    // After a plain form post the server redirects to #c-{id}: landing there means it was stored.
    const plain = getItem(session, KEY_PLAIN_POST);
    if (plain) {
      removeItem(session, KEY_PLAIN_POST);
      const landed = location.hash.startsWith("#c-") && commentEl(decodeURIComponent(location.hash.slice(3)));
      if (landed) {
        try { clearDraft(JSON.parse(plain).parent || ""); } catch (e) { /* ignore */ }
      }
    }
    const drafts = loadDrafts();
    for (const [parent, text] of Object.entries(drafts)) {
      let form = null;
      if (!parent) form = root.querySelector('.composer form[data-comment-form]');
      else {
        const li = commentEl(parent);
        const details = li && part(li, "reply");
        form = details ? ensureForm(details) : null;
      }
      const body = form && field(form, "body");
      if (!body) continue;
      if (!body.value) body.value = text;
      const details = form.closest("details.reply");
      if (details && !details.hidden) details.open = true;
    }
  }

  root.addEventListener("input", (event) => {
    const el = event.target;
    if (!(el instanceof HTMLTextAreaElement) || el.name !== "body") return;
    const form = el.form;
    if (form && form.matches("[data-comment-form]")) saveDraft(form.dataset.parent || "", el.value);
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

  root.addEventListener("submit", onSubmit);

  // --- page lifecycle ---------------------------------------------------------------------

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    updateTimes();
    recheckUnseen();
    reconnectNow();
  });
  window.addEventListener("online", reconnectNow);
  window.addEventListener("offline", () => {
    if (!ws) showConn("offline");
  });
  // Close cleanly when leaving so presence drops at once and the page can enter the
  // back/forward cache; reconnect if it comes back from there.
  window.addEventListener("pagehide", () => {
    if (ws) drop(ws);
    clearTimeout(retryTimer);
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted && !stopped) {
      attempt = 0;
      reconnectNow();
    }
  });

  // --- start ------------------------------------------------------------------------------

  prefillIdentity(root);
  restoreDrafts();
  updateTimes();
  setInterval(() => { if (!document.hidden) updateTimes(); }, 60000);
  setCount(count);
  showConn("connecting");
  connect();
})();
