import { afterEach, describe, expect, it, vi } from "vitest";
import { Blotter, toRow } from "./blotter";
import { fmtUtc } from "../format";

describe("blotter rows", () => {
  afterEach(() => vi.useRealTimers());

  it("carry the market time of the tick behind a signal, order or fill, and when they were received", () => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date("2026-12-08T10:00:00Z"));
    const ts = 1381151876_123_456_789; // 2013-10-07T13:17:56.123456789Z
    const sig = toRow({ channel: "signals", data: { symbol: "IBM", side: "BUY", price: 185.2, detector: "ema_cross", ts_event: ts } }, 0);
    const fill = toRow({ channel: "fills", data: { symbol: "IBM", side: "SELL", last_qty: "10", last_px: "185.3", ts_event: ts } }, 1);
    const order = toRow({ channel: "orders", data: { symbol: "IBM", side: "BUY", status: "NEW", order_qty: "10" } }, 2);
    expect(sig?.event).toBe(1381151876123);
    expect(fill?.event).toBe(1381151876123);
    expect(order?.event).toBeNull(); // no ts_event: shown as a dash
    expect(sig?.at).toBe(Date.parse("2026-12-08T10:00:00Z"));
    expect(fmtUtc(sig!.event)).toBe("2013-10-07 13:17:56.123");
    expect(fmtUtc(order!.event)).toBe("—");
  });

  it("ignore other channels and flush the newest first, at most every flushMs", () => {
    vi.useFakeTimers();
    const b = new Blotter(250);
    const seen: string[][] = [];
    b.subscribe((rows) => seen.push(rows.map((r) => r.symbol)));
    b.push({ channel: "ticks", data: { symbol: "X" } });
    b.push({ channel: "signals", data: { symbol: "A", ts_event: 1 } });
    b.push({ channel: "fills", data: { symbol: "B", ts_event: "2000000" } });
    expect(seen).toEqual([]);
    vi.advanceTimersByTime(250);
    expect(seen).toEqual([["B", "A"]]);
    expect(b.rows[0].event).toBe(2);
  });
});
