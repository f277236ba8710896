import { describe, expect, it, vi } from "vitest";
import { MARKER_MAX, PRICE_MAX, PriceBook, frameScheduler, tickPrice, type DrawScheduler } from "./prices";

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
