// The one live connection to /ws, kept alive across network trouble.
//
// Why this is more than `new WebSocket`:
// - A dropped socket must come back by itself, without a thundering herd when
//   the server restarts: exponential backoff with jitter.
// - Nothing may be missed while away: every event frame carries a cursor and
//   we reconnect with ?since=<last cursor>, so the server replays the gap.
// - A socket can look open while the network is gone (laptop lid, Wi-Fi
//   switch, DevTools "offline"): an application-level ping with a deadline
//   finds such zombies, and the browser's offline/online events short-cut it.

const PING_EVERY_MS = 10000;
const PONG_DEADLINE_MS = 5000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30000;
// A connection that stayed up this long resets the backoff: flapping links
// keep growing the delay, healthy ones reconnect fast next time.
const STABLE_AFTER_MS = 10000;

export const CLOSE_SESSION_ENDED = 4401;

export class LiveSocket {
  /**
   * @param {object} opts
   * @param {string|null} opts.cursor  where to resume from (null: live only)
   * @param {(frame: object) => void} opts.onFrame  every server frame, in order
   * @param {(state: string, info?: object) => void} opts.onState
   *        'connecting' | 'online' | 'offline' | 'ended'
   * @param {() => Promise<boolean>} opts.stillSignedIn  asked when the
   *        handshake keeps failing; the browser hides the HTTP status of a
   *        refused upgrade, so we ask the HTTP API whether the session lives.
   */
  constructor({ cursor = null, onFrame, onState, stillSignedIn, actAs = null }) {
    this.cursor = cursor;
    // A team socket (`/ws?as=BUSINESS`): the business's events, for an agent.
    this.actAs = actAs;
    this.readyCursor = null;
    this.onFrame = onFrame;
    this.onState = onState;
    this.stillSignedIn = stillSignedIn;
    this.ws = null;
    this.state = 'idle';
    this.attempt = 0;
    this.stopped = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.stableTimer = null;
    this.nonce = 0;
    this.awaitingPong = null;
    this.gotReady = false;

    this._onOnline = () => this._wake('online');
    this._onOffline = () => this._drop('offline', { offline: true });
    this._onVisible = () => {
      // Timers are throttled in background tabs; when the person comes back,
      // check at once that the socket still works rather than trusting it.
      if (document.visibilityState === 'visible') {
        if (this.state === 'online') this.probe();
        else this._wake('visible');
      }
    };
    window.addEventListener('online', this._onOnline);
    window.addEventListener('offline', this._onOffline);
    document.addEventListener('visibilitychange', this._onVisible);
  }

  start() {
    this.stopped = false;
    if (navigator.onLine === false) this._setState('offline');
    this._connect();
  }

  /** Close for good (sign-out, page teardown). */
  stop() {
    this.stopped = true;
    window.removeEventListener('online', this._onOnline);
    window.removeEventListener('offline', this._onOffline);
    document.removeEventListener('visibilitychange', this._onVisible);
    this._clearTimers();
    this._detach(1000);
  }

  get isOnline() {
    return this.state === 'online';
  }

  /** Send a frame if the connection is up; false means "queue it yourself". */
  send(frame) {
    if (this.state !== 'online' || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Check now that the socket still carries traffic. Used right after a send:
   * if the network died silently we find out in seconds, not at the next
   * scheduled ping, and the outbox goes out again on the new connection.
   */
  probe(deadline = PONG_DEADLINE_MS) {
    if (this.state !== 'online' || this.awaitingPong !== null) return;
    this._ping(deadline);
  }

  _connect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this._setState(navigator.onLine === false ? 'offline' : 'connecting');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const params = new URLSearchParams();
    if (this.cursor) params.set('since', this.cursor);
    if (this.actAs) params.set('as', this.actAs);
    const qs = params.toString();
    const q = qs ? `?${qs}` : '';
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}/ws${q}`);
    } catch {
      this._scheduleRetry();
      return;
    }
    this.ws = ws;
    this.gotReady = false;
    this.sinceUsed = this.cursor;
    ws.onmessage = (ev) => this._onMessage(ev);
    ws.onclose = (ev) => this._onClose(ws, ev);
    // onerror is always followed by onclose; all handling lives there.
    ws.onerror = () => {};
  }

  _onMessage(ev) {
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    // Any frame proves the link works; no need to wait for the pong itself.
    this._gotTraffic();
    if (frame.type === 'pong') return;
    if (frame.type === 'ready') {
      this.gotReady = true;
      this.readyCursor = frame.cursor || null;
      // Resuming: keep our own cursor until replayed frames move it; if the
      // link drops mid-replay we must ask again from where we really are.
      // Fresh start: the ready cursor is where "live" begins.
      if (!this.sinceUsed && frame.cursor) this.cursor = frame.cursor;
      this._setState('online');
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => { this.attempt = 0; }, STABLE_AFTER_MS);
      this._schedulePing();
    } else if (frame.type === 'reset') {
      // Our cursor was too old to replay; the server goes live from its ready
      // point, and the app refetches over HTTP.
      if (this.readyCursor) this.cursor = this.readyCursor;
    } else if (frame.cursor) {
      this.cursor = frame.cursor;
    }
    this.onFrame(frame);
  }

  _onClose(ws, ev) {
    if (ws !== this.ws) return; // an old socket we already gave up on
    this.ws = null;
    this._clearTimers();
    if (this.stopped) return;
    if (ev.code === CLOSE_SESSION_ENDED) {
      this.stopped = true;
      this._setState('ended');
      return;
    }
    if (!this.gotReady) {
      // Refused upgrade or no network. After a couple of tries, check the
      // session over HTTP: a 401 there means sign-in, not endless retries.
      this.attempt += 1;
      if (this.attempt >= 2 && this.stillSignedIn && navigator.onLine !== false) {
        this.stillSignedIn().then((ok) => {
          if (ok === false) {
            this.stopped = true;
            this._setState('ended');
          } else {
            this._scheduleRetry(true);
          }
        });
        return;
      }
      this._scheduleRetry(true);
      return;
    }
    this._scheduleRetry();
  }

  /** Give up on the current socket at once (don't wait for a close handshake
   *  that a dead network will never complete) and plan the next attempt. */
  _drop(reason, { offline = false } = {}) {
    if (this.stopped) return;
    this._clearTimers();
    this._detach(4000);
    if (offline) this._setState('offline');
    this._scheduleRetry();
  }

  _detach(code) {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    try { ws.close(code); } catch { /* already closing */ }
  }

  _wake() {
    if (this.stopped) return;
    if (this.ws && (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING)) return;
    this.attempt = 0;
    this._connect();
  }

  _scheduleRetry(countAlready = false) {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    if (!countAlready) this.attempt += 1;
    const offline = navigator.onLine === false;
    // 'offline' only when the device says so; a server restart is
    // 'connecting', which the page words differently.
    this._setState(offline ? 'offline' : 'connecting');
    // "Equal jitter": half fixed, half random, so clients spread out after a
    // server restart but nobody waits close to zero in a tight loop.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, this.attempt - 1));
    // While the browser says it is offline, wait for the 'online' event, but
    // still try now and then: that event is not reliable on every platform.
    const delay = offline ? Math.max(cap, 5000) : cap / 2 + Math.random() * (cap / 2);
    this.retryTimer = setTimeout(() => this._connect(), delay);
  }

  _schedulePing() {
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => this._ping(PONG_DEADLINE_MS), PING_EVERY_MS);
  }

  _ping(deadline) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.nonce += 1;
    this.awaitingPong = this.nonce;
    try {
      this.ws.send(JSON.stringify({ type: 'ping', nonce: this.nonce }));
    } catch {
      this._drop('send failed');
      return;
    }
    clearTimeout(this.pongTimer);
    this.pongTimer = setTimeout(() => {
      // No traffic at all within the deadline: the socket is a zombie.
      this._drop('ping timeout');
    }, deadline);
  }

  _gotTraffic() {
    if (this.awaitingPong !== null) {
      this.awaitingPong = null;
      clearTimeout(this.pongTimer);
    }
    if (this.state === 'online') this._schedulePing();
  }

  _clearTimers() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.pingTimer);
    clearTimeout(this.pongTimer);
    clearTimeout(this.stableTimer);
    this.awaitingPong = null;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state);
  }
}
