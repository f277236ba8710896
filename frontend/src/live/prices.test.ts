import { describe, expect, it, vi } from "vitest";
import { MARKER_MAX, PRICE_MAX, PriceBook, REWIND_S, eventSeconds, frameScheduler, tickPrice, type DrawScheduler } from "./prices";

/** Draws only when the test says a frame has come. */
function manualScheduler() {
  let pending: (() => void) | null = null;
  const s: DrawScheduler & { frame(): void } = {
    request: (d) => void (pending = d),
    cancel: () => void (pending = null),
    frame: () => {
      const d = pending;
      pending = null;
      d?.();
    },
  };
  return s;
}

const tick = (symbol: string, price: number, extra = {}) => ({ channel: "ticks" as const, data: { symbol, type: "trade", price, ...extra } });

describe("PriceBook", () => {
  it("takes a trade's price, else the quote's mid, and ignores a tick with neither", () => {
    expect(tickPrice({ price: 101.5, bid: 0, ask: 0 })).toBe(101.5);
    expect(tickPrice({ price: 0, bid: 99, ask: 101 })).toBe(100);
    expect(tickPrice({ price: 0, bid: 0, ask: 101 })).toBeNull();
  });

  it("keeps one point per second per symbol, the latest price of that second", () => {
    let now = 1_000_000;
    const book = new PriceBook(manualScheduler(), () => now);
    book.push(tick("AAA", 10));
    now += 400;
    book.push(tick("AAA", 11));
    now += 700;
    book.push(tick("AAA", 12));
    book.push(tick("BBB", 5));
    expect(book.get("AAA").points).toEqual([
      { time: 1000, value: 11 },
      { time: 1001, value: 12 },
    ]);
    expect(book.symbols()).toEqual(["AAA", "BBB"]);
  });

  it("holds at most PRICE_MAX points and MARKER_MAX markers per symbol, the newest", () => {
    let now = 0;
    const book = new PriceBook(manualScheduler(), () => now);
    for (let i = 0; i < PRICE_MAX + 250; i++) {
      now = i * 1000;
      book.push(tick("AAA", i));
      book.push({ channel: "signals", data: { symbol: "AAA", side: i % 2 ? "SELL" : "BUY", price: i, detector: "breakout" } });
    }
    const s = book.get("AAA");
    expect(s.points).toHaveLength(PRICE_MAX);
    expect(s.points[0].value).toBe(250);
    expect(s.points[PRICE_MAX - 1].value).toBe(PRICE_MAX + 249);
    expect(s.markers).toHaveLength(MARKER_MAX);
    expect(s.markers[MARKER_MAX - 1].price).toBe(PRICE_MAX + 249);
  });

  it("marks signals and fills with their side and price, and ignores orders", () => {
    const book = new PriceBook(manualScheduler(), () => 5_000);
    book.push({ channel: "signals", data: { symbol: "AAA", side: "BUY", price: 10, detector: "breakout" } });
    book.push({ channel: "fills", data: { symbol: "AAA", side: "SELL", last_qty: "2", last_px: "10.5" } });
    book.push({ channel: "orders", data: { symbol: "AAA", side: "BUY", status: "ACCEPTED" } });
    expect(book.get("AAA").markers).toEqual([
      { time: 5, kind: "signal", side: "BUY", price: 10, text: "breakout" },
      { time: 5, kind: "fill", side: "SELL", price: 10.5, text: "fill 2 @ 10.5" },
    ]);
  });

  it("draws market time: each tick, signal and fill at its own ts_event, not when the panel got it", () => {
    const NS = 1_000_000_000;
    const t0 = 1_381_152_600; // 2013-10-07 13:30:00 UTC, an old session replayed at full speed
    const book = new PriceBook(manualScheduler(), () => 9_000_000_000); // the panel's clock: never used here
    book.push(tick("IBM", 182.1, { ts_event: t0 * NS + 250_000_000 }));
    book.push(tick("IBM", 182.2, { ts_event: t0 * NS + 900_000_000 })); // same second: replaces
    book.push(tick("IBM", 182.4, { ts_event: (t0 + 600) * NS })); // ten minutes later, a moment after
    // the socket sends a few ticks a second; the signals, later, fill the line in between
    book.push({ channel: "signals", data: { symbol: "IBM", side: "BUY", price: 182.3, detector: "breakout", ts_event: (t0 + 300) * NS } });
    book.push({ channel: "fills", data: { symbol: "IBM", side: "BUY", last_qty: "5", last_px: "182.35", ts_event: (t0 + 301) * NS } });
    book.push({ channel: "signals", data: { symbol: "IBM", side: "SELL", price: 999, detector: "x", ts_event: (t0 + 600) * NS } });
    const s = book.get("IBM");
    expect(s.points).toEqual([
      { time: t0, value: 182.2 },
      { time: t0 + 300, value: 182.3 }, // the signal's price: no tick had that second
      { time: t0 + 600, value: 182.4 }, // a tick's second: the signal does not overwrite it
    ]);
    expect(s.markers.map((m) => [m.kind, m.time])).toEqual([
      ["signal", t0 + 300],
      ["fill", t0 + 301],
      ["signal", t0 + 600],
    ]);
    expect(eventSeconds({ ts_event: "1381152600500000000" })).toBe(t0);
    expect(eventSeconds({ ts_event: 0 })).toBeNull();
  });

  it("puts a late tick in its place, and starts a symbol again when an earlier period is replayed", () => {
    const NS = 1_000_000_000;
    const book = new PriceBook(manualScheduler(), () => 0);
    book.push(tick("AAA", 10, { ts_event: 1_000 * NS }));
    book.push(tick("AAA", 11, { ts_event: 1_010 * NS }));
    book.push(tick("AAA", 12, { ts_event: 1_005 * NS })); // late, within REWIND_S
    book.push(tick("BBB", 7, { ts_event: 1_010 * NS }));
    expect(book.get("AAA").points.map((p) => [p.time, p.value])).toEqual([[1_000, 10], [1_005, 12], [1_010, 11]]);
    book.push({ channel: "signals", data: { symbol: "AAA", side: "SELL", price: 11, ts_event: 900 * NS } }); // a late signal: no restart
    expect(book.get("AAA").points).toHaveLength(4);
    // the same session replayed from its start: AAA's line and markers begin again, BBB is untouched
    book.push(tick("AAA", 20, { ts_event: (1_010 - REWIND_S - 1) * NS }));
    expect(book.get("AAA")).toMatchObject({ points: [{ time: 1_010 - REWIND_S - 1, value: 20 }], markers: [] });
    expect(book.get("BBB").points).toEqual([{ time: 1_010, value: 7 }]);
  });

  it("keeps the newest PRICE_MAX seconds when points come out of order", () => {
    const NS = 1_000_000_000;
    const book = new PriceBook(manualScheduler(), () => 0);
    for (let i = 0; i < PRICE_MAX + 100; i++) book.push(tick("AAA", i, { ts_event: (10_000 + 2 * i) * NS }));
    book.push(tick("AAA", 0.5, { ts_event: (10_000 + 2 * (PRICE_MAX + 99) - 3) * NS })); // an odd second, late
    const p = book.get("AAA").points;
    expect(p).toHaveLength(PRICE_MAX);
    expect(p.every((x, i) => i === 0 || p[i - 1].time < x.time)).toBe(true);
    expect(p[p.length - 3].value).toBe(0.5); // between the seconds before and after it
  });

  it("tells listeners once per frame however many ticks arrived", () => {
    const sched = manualScheduler();
    const book = new PriceBook(sched);
    const heard = vi.fn();
    book.subscribe(heard);
    for (let i = 0; i < 10_000; i++) book.push(tick(`S${i % 50}`, 100 + i));
    expect(heard).not.toHaveBeenCalled();
    sched.frame();
    expect(heard).toHaveBeenCalledTimes(1);
    sched.frame();
    expect(heard).toHaveBeenCalledTimes(1);
  });
});

describe("frameScheduler", () => {
  it("draws on an animation frame, at most once per interval, the latest request", () => {
    vi.useFakeTimers();
    try {
      const frames: (() => void)[] = [];
      let now = 0;
      const s = frameScheduler(250, (cb) => frames.push(cb), () => now);
      const drawn: string[] = [];
      s.request(() => drawn.push("a"));
      s.request(() => drawn.push("b"));
      vi.advanceTimersByTime(0);
      expect(frames).toHaveLength(1);
      frames.shift()!();
      expect(drawn).toEqual(["b"]);
      now = 100;
      s.request(() => drawn.push("c"));
      vi.advanceTimersByTime(149);
      expect(frames).toHaveLength(0); // 250 ms since the last draw not yet reached
      vi.advanceTimersByTime(1);
      now = 250;
      frames.shift()!();
      expect(drawn).toEqual(["b", "c"]);
    } finally {
      vi.useRealTimers();
    }
  });
});
