import type { LiveMessage } from "./socket";

/** Points kept per symbol: about 80 minutes at one point a second. */
export const PRICE_MAX = 5_000;
/** Signal and fill markers kept per symbol. */
export const MARKER_MAX = 500;
/**
 * A tick more than this many seconds of market time before its symbol's newest point starts that
 * symbol's chart again (a replay of an earlier period); one within it takes its place in the line.
 */
export const REWIND_S = 60;

export interface PricePoint {
  /** whole seconds since the epoch of market time: the tick's own time (the chart's time axis) */
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

/** A message's market time (`ts_event`, nanoseconds since the epoch) in whole milliseconds; null when absent. */
export function eventMs(d: Record<string, unknown>): number | null {
  const ns = num(d.ts_event);
  return ns !== null && ns > 0 ? Math.floor(ns / 1e6) : null;
}

/** The same in whole seconds (the chart's time axis). */
export function eventSeconds(d: Record<string, unknown>): number | null {
  const ms = eventMs(d);
  return ms === null ? null : Math.floor(ms / 1000);
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

/** Sets (`replace`) or fills the point of second `time`, keeping `points` in time order and bounded. */
function put(points: PricePoint[], time: number, value: number, replace: boolean): void {
  let lo = 0;
  let hi = points.length;
  if (hi === 0 || points[hi - 1].time < time) {
    lo = hi; // the usual case: a newer second
  } else {
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (points[mid].time < time) lo = mid + 1;
      else hi = mid;
    }
    if (points[lo].time === time) {
      if (replace) points[lo].value = value;
      return;
    }
  }
  points.splice(lo, 0, { time, value });
  if (points.length > PRICE_MAX) points.splice(0, points.length - PRICE_MAX);
}

/**
 * Per-symbol price history on market time, with the symbol's signals and fills as markers. Time is
 * each message's `ts_event` (the tick's time, which a signal and a fill carry too), so a replay at full
 * speed draws its whole session rather than the few seconds of wall clock it took; the panel's clock
 * stands in only for a message without one. One point per second (the chart's time axis needs strictly
 * increasing seconds), kept in time order: a tick sets its second's price; a signal's price (the price
 * of the tick it fired on) fills a second no tick has, which is what draws a fast replay's line, since
 * the socket sends each symbol's latest tick only a few times a second. A tick more than REWIND_S
 * before the symbol's newest point starts its series again (an earlier period replayed); signals and
 * fills never do, as they reach the panel after the ticks they came from, minutes of market time later
 * in a fast replay. Bounded: at most PRICE_MAX points (the oldest go) and MARKER_MAX markers per
 * symbol. Listeners hear of changes through the scheduler: thousands of ticks a second cost a few
 * draws a second.
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
    if (m.channel !== "ticks" && m.channel !== "signals" && m.channel !== "fills") return;
    const time = eventSeconds(d) ?? Math.floor(this.clock() / 1000);
    if (m.channel === "ticks") {
      const value = tickPrice(d);
      if (value === null) return;
      let s = this.ensure(symbol);
      if (s.points.length && time < s.points[s.points.length - 1].time - REWIND_S) {
        s = { points: [], markers: [] }; // an earlier period replayed: its chart starts again
        this.series.set(symbol, s);
      }
      put(s.points, time, value, true);
    } else {
      const sd = side(d.side);
      const price = num(m.channel === "fills" ? d.last_px : d.price);
      if (sd === null) return;
      const s = this.ensure(symbol);
      const kind = m.channel === "fills" ? "fill" : "signal";
      if (kind === "signal" && price !== null && price > 0) put(s.points, time, price, false);
      const text = kind === "fill" ? `fill ${String(d.last_qty ?? "")} @ ${String(d.last_px ?? "")}` : String(d.detector ?? "signal");
      s.markers.push({ time, kind, side: sd, price: price ?? NaN, text });
      if (s.markers.length > MARKER_MAX) s.markers.splice(0, s.markers.length - MARKER_MAX);
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
