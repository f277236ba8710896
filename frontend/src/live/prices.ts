import type { LiveMessage } from "./socket";

/** Points kept per symbol: about 80 minutes at one point a second. */
export const PRICE_MAX = 5_000;
/** Signal and fill markers kept per symbol. */
export const MARKER_MAX = 500;

export interface PricePoint {
  /** whole seconds since the epoch, when the panel received it (the chart's time axis) */
  time: number;
  value: number;
}

export interface PriceMarker {
  time: number;
  kind: "signal" | "fill";
  side: "BUY" | "SELL";
  price: number;
  text: string;
}

export interface SymbolSeries {
  points: PricePoint[];
  markers: PriceMarker[];
}

/** Calls `draw` at most every `minIntervalMs`, on an animation frame (never twice per frame). */
export interface DrawScheduler {
  request(draw: () => void): void;
  cancel(): void;
}

export function frameScheduler(
  minIntervalMs = 250,
  frame: (cb: () => void) => unknown = (cb) => requestAnimationFrame(cb),
  now: () => number = () => performance.now(),
): DrawScheduler {
  let pending: (() => void) | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let last = -Infinity;
  return {
    request(draw) {
      const waiting = pending !== null;
      pending = draw;
      if (waiting) return;
      timer = setTimeout(
        () =>
          frame(() => {
            const fn = pending;
            pending = null;
            last = now();
            fn?.();
          }),
        Math.max(0, last + minIntervalMs - now()),
      );
    },
    cancel() {
      clearTimeout(timer);
      pending = null;
    },
  };
}

function num(v: unknown): number | null {
  const n = typeof v === "number" ? v : typeof v === "string" && v !== "" ? Number(v) : NaN;
  return Number.isFinite(n) ? n : null;
}

/** A trade's price, else the quote's mid; null when the tick carries neither. */
export function tickPrice(d: Record<string, unknown>): number | null {
  const price = num(d.price);
  if (price !== null && price > 0) return price;
  const bid = num(d.bid);
  const ask = num(d.ask);
  return bid !== null && ask !== null && bid > 0 && ask > 0 ? (bid + ask) / 2 : null;
}

function side(v: unknown): "BUY" | "SELL" | null {
  const s = String(v ?? "").toUpperCase();
  return s === "BUY" || s === "1" ? "BUY" : s === "SELL" || s === "-1" ? "SELL" : null;
}

/**
 * Per-symbol price history from the socket's ticks (one point per second: a later tick in the same
 * second replaces the point, as the chart's time axis needs strictly increasing seconds), with the
 * signals and fills of the symbol as markers. Both are bounded, so a session left open for days
 * holds at most PRICE_MAX points and MARKER_MAX markers per symbol. Listeners hear of changes through
 * the scheduler: thousands of ticks a second cost a few draws a second.
 */
export class PriceBook {
  private series = new Map<string, SymbolSeries>();
  private listeners = new Set<() => void>();

  constructor(
    private scheduler: DrawScheduler = frameScheduler(),
    private clock: () => number = () => Date.now(),
  ) {}

  symbols(): string[] {
    return [...this.series.keys()].sort();
  }

  get(symbol: string): SymbolSeries {
    return this.series.get(symbol) ?? { points: [], markers: [] };
  }

  push(m: LiveMessage): void {
    const d = m.data;
    const symbol = typeof d.symbol === "string" ? d.symbol : "";
    if (!symbol) return;
    const time = Math.floor(this.clock() / 1000);
    if (m.channel === "ticks") {
      const value = tickPrice(d);
      if (value === null) return;
      const s = this.ensure(symbol);
      const last = s.points[s.points.length - 1];
      if (last && last.time >= time) last.value = value;
      else s.points.push({ time, value });
      if (s.points.length > PRICE_MAX) s.points.splice(0, s.points.length - PRICE_MAX);
    } else if (m.channel === "signals" || m.channel === "fills") {
      const sd = side(d.side);
      const price = num(m.channel === "fills" ? d.last_px : d.price);
      if (sd === null) return;
      const s = this.ensure(symbol);
      const kind = m.channel === "fills" ? "fill" : "signal";
      const text = kind === "fill" ? `fill ${String(d.last_qty ?? "")} @ ${String(d.last_px ?? "")}` : String(d.detector ?? "signal");
      s.markers.push({ time, kind, side: sd, price: price ?? NaN, text });
      if (s.markers.length > MARKER_MAX) s.markers.splice(0, s.markers.length - MARKER_MAX);
    } else {
      return;
    }
    this.scheduler.request(() => {
      for (const fn of this.listeners) fn();
    });
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private ensure(symbol: string): SymbolSeries {
    let s = this.series.get(symbol);
    if (!s) {
      s = { points: [], markers: [] };
      this.series.set(symbol, s);
    }
    return s;
  }
}
