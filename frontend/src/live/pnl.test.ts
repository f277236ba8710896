import { describe, expect, it } from "vitest";
import { localDay, todayPnl, totalsFromPnl, totalsFromPositions } from "./pnl";

describe("P&L totals", () => {
  it("reads the pnl channel's totals: equity is realised (net of fees) plus unrealised", () => {
    expect(totalsFromPnl({ realized_pnl: "12.4", unrealized_pnl: "-3.1", fees: "0.6", positions: [] })).toEqual({
      realized: 12.4,
      unrealized: -3.1,
      fees: 0.6,
      equity: 12.4 - 3.1,
    });
    expect(totalsFromPnl({ positions: [] })).toBeNull();
  });

  it("takes today's P&L from the server's start-of-day snapshot when the pnl message carries one", () => {
    const at = Date.UTC(2026, 10, 22, 0, 0, 1);
    const t = totalsFromPnl({
      realized_pnl: "20", unrealized_pnl: "5", fees: "1", equity: "25", today_pnl: "7.5",
      day_start: { day: "2026-11-22", equity: "17.5", at_ns: at * 1e6 },
    });
    expect(t?.today).toEqual({ pnl: 7.5, since: { day: "2026-11-22", equity: 17.5, at, server: true } });
    // a malformed snapshot is ignored (the browser's own start stands in)
    expect(totalsFromPnl({ realized_pnl: "1", unrealized_pnl: "0", day_start: { day: 3 } })?.today).toBeUndefined();
  });

  it("sums polled positions as the server does: realised gross of fees, so fees come off", () => {
    const t = totalsFromPositions([
      { realized_pnl: "10", fees: "1", unrealized_pnl: "2" },
      { realized_pnl: "-4", fees: "0.5", unrealized_pnl: null },
    ]);
    expect(t).toEqual({ realized: 4.5, unrealized: 2, fees: 1.5, equity: 6.5 });
  });
});

describe("today's P&L", () => {
  it("is the equity less the first equity seen today, kept across reloads, reset the next day", () => {
    const morning = new Date(2026, 10, 22, 9, 30).getTime();
    expect(todayPnl(100, morning, localStorage)).toEqual({ pnl: 0, since: { day: "2026-11-22", equity: 100, at: morning } });
    expect(todayPnl(130, morning + 3_600_000, localStorage).pnl).toBe(30);
    const tomorrow = new Date(2026, 10, 23, 0, 5).getTime();
    expect(todayPnl(125, tomorrow, localStorage)).toEqual({ pnl: 0, since: { day: "2026-11-23", equity: 125, at: tomorrow } });
    expect(todayPnl(120, tomorrow + 1000, localStorage).pnl).toBe(-5);
  });

  it("starts afresh when what is stored is not readable", () => {
    localStorage.setItem("aitrader.pnl.dayStart", "{not json");
    const now = new Date(2026, 0, 2, 12).getTime();
    expect(todayPnl(7, now, localStorage)).toEqual({ pnl: 0, since: { day: localDay(now), equity: 7, at: now } });
  });
});
