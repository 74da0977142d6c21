/* Backchannel: keeps the server-rendered comment thread live over a WebSocket.
 *
 * The page works without this file (every form posts). With it (ES modules, no build step):
 *   live/state.js     the page's state, in one object
 *   lib/socket.js     the reconnecting socket (backoff, refusals)
 *   live/thread.js    comments built from the template, updated, counted, "Read more"
 *   live/composer.js  posting, drafts, the length counter, Ctrl/Cmd+Enter and Escape
 *   live/actions.js   Report and the moderator's tools, sent with fetch
 *   live/mine.js      Recommend, and Edit / Delete on the reader's own comments
 *   live/paging.js    "Load more" and "N more replies" in place, the sort remembered, permalinks
 * The thread's state (open, closed, hidden) comes in the welcome and as sequenced events.
 * and here the wire: events arrive over /articles/{slug}/live and are applied in seq order,
 * each once; a gap means reconnect with since=<last seq>, a reset means reload the page.
 */

import { state, initState } from "./live/state.js";
import { session, toInt } from "./lib/util.js";
import { _, ngettext } from "./lib/i18n.js";
import { ReconnectingSocket } from "./lib/socket.js";
import { applyEvent, onPending, recheckUnseen, setThreadState, startThread, updateTimes } from "./live/thread.js";
import { onAck, onPostError, onSocketLost, saveAllDrafts, startComposer } from "./live/composer.js";
import { startActions } from "./live/actions.js";
import { onVotes, startMine } from "./live/mine.js";
import { startPaging } from "./live/paging.js";

const CLOSE_SERVICE_RESTART = 1012;
const CLOSE_TOO_SLOW = 4000;
const CLOSE_SESSION_ENDED = 4003; // a moderator's session ended: this page is a reader's again
const CLOSE_THREAD_HIDDEN = 4010; // the thread is hidden from readers: nothing to wait for

// --- the connection line ("● Live", "Offline — retrying in 5s", a refusal's reason) -------

let countdownTimer = 0;
const REFUSALS = {
  "too many connections from your network": _("There are too many connections from your network."),
};

function showConn(connState, { retryAt = 0, reason = "" } = {}) {
  state.connState = connState;
  const statusEl = state.root.querySelector("[data-live-status]");
  const connEl = state.root.querySelector("[data-conn]");
  if (!statusEl || !connEl) return;
  statusEl.hidden = false;
  clearInterval(countdownTimer);
  countdownTimer = 0;
  connEl.dataset.state = connState;
  const seconds = () => Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
  let text = null;
  if (connState === "live") text = () => _("● Live");
  else if (connState === "connecting") text = () => _("Connecting…");
  else if (connState === "reconnecting") text = () => _("Reconnecting…");
  else if (connState === "offline") {
    text = () => (navigator.onLine === false && !retryAt ? _("Offline") : _("Offline — retrying in {n}s", { n: seconds() }));
  } else if (connState === "refused") {
    // The server turned the live connection down (e.g. too many from one address, as behind
    // a carrier's shared address): the thread is all here, only live updates wait.
    // The server's close reason is for developers (docs/protocol.md); a reader is told it in
    // the page's language, or the general case.
    const why = REFUSALS[reason.replace(/[.\s]+$/, "")]
      || _("The server is not taking live connections from your network right now.");
    text = () => _("Live updates paused: {why} Retrying in {n}s; you can still read and post.", { why, n: seconds() });
  } else if (connState === "stopped") text = () => _("Live updates unavailable");
  connEl.textContent = text ? text() : "";
  if (connState === "offline" || connState === "refused") {
    countdownTimer = setInterval(() => { connEl.textContent = text(); }, 1000);
  }
  showReaders();
}

function showReaders() {
  const readersEl = state.root.querySelector("[data-readers]");
  if (!readersEl) return;
  const visible = state.connState === "live" && typeof state.readers === "number" && state.readers > 0;
  readersEl.hidden = !visible;
  if (visible) readersEl.textContent = ngettext("{n} reading now", "{n} reading now", state.readers);
}

// --- frames ------------------------------------------------------------------------------

const KEY_RESET_AT = () => "backchannel.reset-at." + state.slug;
let gapStreak = 0;

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams({ since: String(state.lastSeq) });
  if (state.epoch) params.set("epoch", state.epoch);
  const liveUrl = state.liveUrl;
  return scheme + "//" + location.host + liveUrl + (liveUrl.includes("?") ? "&" : "?") + params;
}

function onFrame(msg, sock) {
  switch (msg.type) {
    case "welcome": onWelcome(msg); return;
    case "presence":
      if (typeof msg.readers === "number") { state.readers = msg.readers; showReaders(); }
      return;
    case "ack": onAck(msg); return;
    case "votes": onVotes(msg.counts); return; // not sequenced: the latest counts
    case "pending": if (state.isMod) onPending(msg.comment); return; // held for moderation (moderators only)
    case "error": onError(msg); return;
    case "reset": resetThread(); return;
    default: break;
  }
  if (typeof msg.seq !== "number") return;
  if (msg.seq <= state.lastSeq) return; // already applied
  if (msg.seq > state.lastSeq + 1) {
    // A gap: something was missed. Reconnect and let the server replay from lastSeq.
    gapStreak += 1;
    state.socket.drop(sock);
    state.socket.schedule(gapStreak <= 2 ? "quick" : "backoff");
    return;
  }
  try {
    applyEvent(msg);
  } catch (e) {
    console.error("backchannel: could not apply event", msg.seq, e);
  }
  state.lastSeq = msg.seq;
  state.root.dataset.seq = String(state.lastSeq);
  gapStreak = 0;
}

function onWelcome(msg) {
  if (msg.epoch && state.epoch && msg.epoch !== state.epoch) { resetThread(); return; }
  if (typeof msg.seq === "number" && msg.seq < state.lastSeq) { resetThread(); return; }
  if (msg.epoch) { state.epoch = msg.epoch; state.root.dataset.epoch = state.epoch; }
  if (typeof msg.readers === "number") state.readers = msg.readers;
  // The state as of msg.seq; events replayed after the welcome lead to it too.
  if (msg.state) setThreadState(msg.state);
  state.socket.markWelcomed();
}

function onError(msg) {
  if (onPostError(msg)) return;
  console.warn("backchannel:", msg.code, msg.message);
  if (msg.code === "not_found") {
    // The thread itself is gone: nothing to stay connected for.
    state.socket.stop();
    showConn("stopped");
  }
}

function onClose(event) {
  onSocketLost();
  if (state.isMod && event.code === CLOSE_SESSION_ENDED) { resetThread(); return "stop"; } // reload as a reader
  if (event.code === CLOSE_THREAD_HIDDEN) {
    setThreadState("hidden");
    showConn("stopped");
    return "stop";
  }
  if (event.code === CLOSE_SERVICE_RESTART || event.code === CLOSE_TOO_SLOW) return "quick";
  return undefined;
}

function resetThread() {
  saveAllDrafts();
  const now = Date.now();
  const last = toInt(session.get(KEY_RESET_AT()), 0);
  state.socket.stop();
  showConn("reconnecting");
  // Never reload in a tight loop if the server keeps asking for it.
  const wait = now - last < 10000 ? 10000 : 0;
  setTimeout(() => {
    session.set(KEY_RESET_AT(), String(Date.now()));
    location.reload();
  }, wait);
}

// --- start -------------------------------------------------------------------------------

if (initState()) {
  state.socket = new ReconnectingSocket({ url: socketUrl, onFrame, onClose, onStatus: showConn });
  startThread();
  startComposer();
  startActions();
  startMine();
  startPaging();

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    updateTimes();
    recheckUnseen();
    state.socket.reconnectNow();
  });
  window.addEventListener("online", () => state.socket.reconnectNow());
  window.addEventListener("offline", () => {
    if (!state.socket.ws) showConn("offline");
  });
  // Close cleanly when leaving so presence drops at once and the page can enter the
  // back/forward cache; reconnect if it comes back from there.
  window.addEventListener("pagehide", () => state.socket.pause());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) state.socket.reconnectNow({ fresh: true });
  });

  // A reader's page of a hidden thread has nothing to follow: the server would turn it away.
  if (state.liveUrl && (state.threadState !== "hidden" || state.isMod)) {
    showConn("connecting");
    state.socket.connect();
  }
}
