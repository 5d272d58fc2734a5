// A job's events over the WebSocket, resumed with ?after=<last seq> whenever the socket drops.
//
// Browsers cannot set headers on a WebSocket, so every connection first trades the key for a
// single-use ticket (POST /v1/ws-tickets). The service numbers events with a gap-free seq and
// replays everything after ?after=n, so remembering the last seq shown is enough to lose
// nothing and show nothing twice. Close codes (docs/api.md): 1000 the stream ended, 4410 the
// events needed next were trimmed (fetch the job), 4404 the job vanished; anything else
// (1006 a dropped connection, 1013 broker away, 1011, 1008) means reconnect.

import { api, NetworkError, ProblemError } from "./api.js";

const NORMAL = 1000;
const JOB_NOT_FOUND = 4404;
const EVENTS_TRIMMED = 4410;
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 5000;

function socketBase() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
}

export class JobStream {
  // handlers: event(e), ended(reason: "done" | "closed" | "trimmed" | "gone"),
  // reconnecting(attempt, delayMs), refused(ProblemError)
  constructor(jobId, handlers, after = 0) {
    this.jobId = jobId;
    this.handlers = handlers;
    this.last = after;
    this.failures = 0;
    this.stopped = false;
    this.socket = null;
    this.timer = null;
  }

  start() {
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(NORMAL);
  }

  reconnectNow() {
    // the browser says the network is back: no need to sit out the back-off
    if (this.timer !== null && !this.stopped) {
      clearTimeout(this.timer);
      this.connect();
    }
  }

  async connect() {
    this.timer = null;
    if (this.stopped) return;
    let ticket;
    try {
      ticket = (await api.ticket()).ticket;
    } catch (error) {
      if (error instanceof ProblemError && error.status < 500) {
        this.handlers.refused(error);  // a key problem: the page asks for one
        return;
      }
      this.retry(error instanceof ProblemError ? error.retryAfter : null);
      return;
    }
    if (this.stopped) return;
    const url = `${socketBase()}/v1/jobs/${encodeURIComponent(this.jobId)}/stream` +
      `?after=${this.last}&ticket=${encodeURIComponent(ticket)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    let finished = false;
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.seq <= this.last) return;
      this.last = event.seq;
      this.failures = 0;
      finished = event.type === "done" || event.type === "error";
      this.handlers.event(event);
      if (finished) this.handlers.ended("done");
    };
    socket.onclose = (close) => {
      if (this.stopped || finished || socket !== this.socket) return;
      if (close.code === NORMAL) this.handlers.ended("closed");
      else if (close.code === EVENTS_TRIMMED) this.handlers.ended("trimmed");
      else if (close.code === JOB_NOT_FOUND) this.handlers.ended("gone");
      else this.retry(null);
    };
  }

  async retry(retryAfterSeconds) {
    this.failures += 1;
    if (this.failures > 2 && await this.jobIsGone()) return;
    const delay = retryAfterSeconds !== null
      ? retryAfterSeconds * 1000
      : Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (this.failures - 1));
    this.handlers.reconnecting(this.failures, delay);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  async jobIsGone() {
    // a refused handshake looks like a dropped connection to a browser: ask over HTTP
    try {
      await api.get(this.jobId);
      return false;
    } catch (error) {
      if (error instanceof NetworkError || !(error instanceof ProblemError)) return false;
      if (error.status >= 500) return false;
      this.handlers.refused(error);
      return true;
    }
  }
}
