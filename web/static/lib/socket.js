/* A WebSocket that comes back by itself: the article page's and the desk's live connection.
 *
 * Reconnects with full-jitter exponential backoff (readers who lost the same instance do not
 * all come back at the same moment). The owner decides what a close means first (its own
 * close codes); then:
 *   - a close with an application code (4000-4999) the owner did not claim is a refusal the
 *     reader is told about (4029: too many connections from one address, as behind a
 *     carrier's NAT): its reason is shown and the socket retries with backoff;
 *   - a handshake refused before the socket opened (a bare HTTP 403) is told apart from a
 *     server that is down by asking probeUrl over plain HTTP.
 * The page itself stays readable throughout: it was rendered on the server.
 */

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const REFUSED_FLOOR_MS = 3000; // a refusal is not cured in a few hundred milliseconds

export class ReconnectingSocket {
  /**
   * url(): the address to (re)connect to; onFrame(msg, sock): a parsed JSON object frame;
   * onClose(event, {opened, welcomed}): "stop" | "quick" | undefined (the default backoff);
   * onStatus(state, {retryAt, reason}): "connecting" | "reconnecting" | "offline" |
   * "refused" | "live" | "stopped".
   */
  constructor({ url, onFrame, onClose = () => undefined, onStatus = () => {}, probeUrl = "/healthz" }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.onStatus = onStatus;
    this.probeUrl = probeUrl;
    this.ws = null;
    this.welcomed = false;
    this.attempt = 0;
    this.retryTimer = 0;
    this.retryAt = 0;
    this.stopped = false;
    this.everConnected = false;
  }

  get ready() {
    return !!this.ws && this.welcomed && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    this.retryAt = 0;
    if (this.stopped || this.ws) return;
    let sock;
    try {
      sock = new WebSocket(this.url());
    } catch (e) {
      this.schedule("backoff");
      return;
    }
    this.ws = sock;
    this.welcomed = false;
    this.onStatus(this.everConnected ? "reconnecting" : "connecting", {});
    let opened = false;
    sock.addEventListener("open", () => { opened = true; });
    sock.addEventListener("message", (ev) => {
      if (this.ws !== sock) return; // a socket we already gave up on
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg && typeof msg === "object") this.onFrame(msg, sock);
    });
    sock.addEventListener("close", (ev) => {
      if (this.ws !== sock) return;
      const welcomed = this.welcomed;
      this.ws = null;
      this.welcomed = false;
      const verdict = this.onClose(ev, { opened, welcomed });
      if (verdict === "stop" || this.stopped) return;
      if (verdict === "quick") { this.schedule("quick"); return; }
      if (ev.code >= 4000 && ev.code <= 4999) { this.schedule("refused", ev.reason); return; }
      if (!opened) { this.probe(); return; }
      this.schedule("backoff");
    });
  }

  // The owner's first frame (welcome) arrived: the connection is live, the backoff starts over.
  markWelcomed() {
    this.welcomed = true;
    this.everConnected = true;
    this.attempt = 0;
    this.onStatus("live", {});
  }

  send(text) {
    this.ws.send(text);
  }

  drop(sock = this.ws) {
    if (!sock) return;
    if (this.ws === sock) { this.ws = null; this.welcomed = false; }
    try { sock.close(1000); } catch (e) { /* already closing */ }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.drop();
  }

  // Now rather than at the next retry (the tab became visible, the network came back).
  reconnectNow({ fresh = false } = {}) {
    if (this.stopped || this.ws) return;
    if (fresh) this.attempt = 0;
    this.connect();
  }

  // Leaving the page: close cleanly, do not retry (pageshow may bring it back).
  pause() {
    this.drop();
    clearTimeout(this.retryTimer);
  }

  async probe() {
    let reachable = false;
    if (navigator.onLine !== false) {
      try {
        const res = await fetch(this.probeUrl, { cache: "no-store", credentials: "same-origin" });
        reachable = res.ok;
      } catch (e) {
        reachable = false;
      }
    }
    if (this.stopped || this.ws) return;
    this.schedule(reachable ? "refused" : "backoff", "");
  }

  schedule(kind, reason = "") {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    let delay;
    if (kind === "quick") {
      delay = 100 + Math.random() * 400;
    } else {
      // Full jitter: anywhere between 0 and the exponential ceiling.
      delay = Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
      if (kind === "refused") delay = Math.max(delay, REFUSED_FLOOR_MS * Math.min(this.attempt + 1, 5));
      this.attempt = Math.min(this.attempt + 1, 16);
    }
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    if (kind === "refused") this.onStatus("refused", { retryAt: this.retryAt, reason });
    else this.onStatus(delay >= 1000 || navigator.onLine === false ? "offline" : "reconnecting", { retryAt: this.retryAt });
  }
}
