/** The /ws client: token in the first message, reconnect with backoff, a status the banner shows. */

export type Channel = "ticks" | "signals" | "orders" | "fills" | "pnl" | "heartbeats" | "alerts";

export interface LiveMessage {
  channel: Channel | "system";
  data: Record<string, unknown>;
}

export type LiveStatus =
  | { kind: "connecting"; attempt: number }
  | { kind: "live" }
  | { kind: "down"; attempt: number; retryAt: number; reason: string };

export interface SocketDeps {
  /** The current access token, refreshed first when `fresh` (after a 4401), or null when signed out. */
  token: (fresh: boolean) => Promise<string | null>;
  url?: string;
  makeSocket?: (url: string) => WebSocket;
  /** Backoff: first delay, cap (ms). */
  baseDelayMs?: number;
  maxDelayMs?: number;
}

const REASONS: Record<number, string> = {
  4401: "token refused",
  4408: "too slow: the server dropped this client",
  4400: "bad request",
  1011: "server error",
  1006: "connection lost",
};

/**
 * One socket for the panel. It sends `{token, channels}` first (browsers cannot set headers, and a
 * token in the URL would land in the server's logs), then reconnects after any close with
 * exponential backoff and jitter — at once with a refreshed token after a 4401.
 */
export class LiveSocket {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = true;
  /** bumped by every open and stop: an open still awaiting its token after a newer one gives up */
  private generation = 0;
  private statusValue: LiveStatus = { kind: "connecting", attempt: 0 };
  private messageListeners = new Set<(m: LiveMessage) => void>();
  private statusListeners = new Set<(s: LiveStatus) => void>();

  constructor(
    private channels: Channel[],
    private deps: SocketDeps,
  ) {}

  get status(): LiveStatus {
    return this.statusValue;
  }

  onMessage(fn: (m: LiveMessage) => void): () => void {
    this.messageListeners.add(fn);
    return () => this.messageListeners.delete(fn);
  }

  onStatus(fn: (s: LiveStatus) => void): () => void {
    this.statusListeners.add(fn);
    return () => this.statusListeners.delete(fn);
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    void this.open(false);
  }

  stop(): void {
    this.stopped = true;
    this.generation += 1;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000);
  }

  private defaultUrl(): string {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}/ws`;
  }

  private async open(freshToken: boolean): Promise<void> {
    if (this.stopped) return;
    const generation = ++this.generation;
    this.setStatus({ kind: "connecting", attempt: this.attempt });
    const token = await this.deps.token(freshToken);
    if (this.stopped || generation !== this.generation) return;
    if (token === null) {
      this.stop();
      return;
    }
    const ws = (this.deps.makeSocket ?? ((u) => new WebSocket(u)))(this.deps.url ?? this.defaultUrl());
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ token, channels: this.channels }));
    ws.onmessage = (e: MessageEvent) => {
      let msg: LiveMessage;
      try {
        msg = JSON.parse(String(e.data)) as LiveMessage;
      } catch {
        return;
      }
      if (msg.channel === "system" && msg.data.type === "welcome") {
        this.attempt = 0;
        this.setStatus({ kind: "live" });
      }
      for (const fn of this.messageListeners) fn(msg);
    };
    ws.onclose = (e: CloseEvent) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      this.scheduleReconnect(e.code, e.reason);
    };
  }

  private scheduleReconnect(code: number, reason: string): void {
    this.attempt += 1;
    const base = this.deps.baseDelayMs ?? 500;
    const cap = this.deps.maxDelayMs ?? 15_000;
    // a refused token is usually one that just expired: retry at once with a fresh one (once)
    const delay = code === 4401 && this.attempt === 1 ? 0 : Math.min(cap, base * 2 ** (this.attempt - 1)) * (0.8 + Math.random() * 0.4);
    this.setStatus({
      kind: "down",
      attempt: this.attempt,
      retryAt: Date.now() + delay,
      reason: reason || REASONS[code] || `closed (${code})`,
    });
    this.timer = setTimeout(() => void this.open(code === 4401), delay);
  }

  private setStatus(s: LiveStatus): void {
    this.statusValue = s;
    for (const fn of this.statusListeners) fn(s);
  }
}
