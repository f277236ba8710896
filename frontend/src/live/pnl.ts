/** P&L totals from the socket's `pnl` channel (or the polled positions), and today's P&L. */

export interface PnlTotals {
  /** realised, net of fees */
  realized: number;
  unrealized: number;
  fees: number;
  /** realised net of fees plus unrealised: the account's equity above its starting capital */
  equity: number;
  /** today's P&L against the server's start-of-day snapshot (the pnl channel's day_start), when it sent one */
  today?: { pnl: number; since: DayStart };
}

interface PositionLike {
  realized_pnl: string;
  unrealized_pnl?: string | null;
  fees: string;
}

function n(v: unknown): number {
  const x = Number(v ?? 0);
  return Number.isFinite(x) ? x : 0;
}

/** The totals of a `pnl` message's data, or null when it is not one (no realized_pnl). */
export function totalsFromPnl(d: Record<string, unknown>): PnlTotals | null {
  if (d.realized_pnl === undefined || d.unrealized_pnl === undefined) return null;
  const realized = n(d.realized_pnl);
  const unrealized = n(d.unrealized_pnl);
  const out: PnlTotals = { realized, unrealized, fees: n(d.fees), equity: realized + unrealized };
  const start = d.day_start as { day?: unknown; equity?: unknown; at_ns?: unknown } | null | undefined;
  if (start && typeof start.day === "string" && Number.isFinite(Number(start.equity)) && Number.isFinite(Number(start.at_ns))) {
    const since = { day: start.day, equity: Number(start.equity), at: Math.floor(Number(start.at_ns) / 1e6), server: true };
    out.today = { pnl: d.today_pnl !== undefined ? n(d.today_pnl) : out.equity - since.equity, since };
  }
  return out;
}

/** The same totals from `/positions` rows (whose realised P&L is gross of fees), as the server sums them. */
export function totalsFromPositions(rows: PositionLike[]): PnlTotals {
  let gross = 0;
  let fees = 0;
  let unrealized = 0;
  for (const p of rows) {
    gross += n(p.realized_pnl);
    fees += n(p.fees);
    unrealized += n(p.unrealized_pnl);
  }
  return { realized: gross - fees, unrealized, fees, equity: gross - fees + unrealized };
}

export interface DayStart {
  /** the calendar day, YYYY-MM-DD: UTC for the server's snapshot, local for the browser's */
  day: string;
  equity: number;
  /** ms since the epoch when it was taken */
  at: number;
  /** the API's snapshot (shared by every browser), not this browser's first sight */
  server?: boolean;
}

const KEY = "aitrader.pnl.dayStart";

export function localDay(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

/**
 * The fallback for today's P&L until the socket's pnl brings the API's start-of-day snapshot: the
 * equity now less the first equity this browser saw today (kept in localStorage so a reload keeps
 * it); `at` says when that was, and the card shows it when it is not midnight.
 */
export function todayPnl(equity: number, nowMs: number, storage: Storage = localStorage): { pnl: number; since: DayStart } {
  const day = localDay(nowMs);
  let start: DayStart | null = null;
  try {
    start = JSON.parse(storage.getItem(KEY) ?? "null") as DayStart | null;
  } catch {
    start = null;
  }
  if (!start || start.day !== day || !Number.isFinite(start.equity)) {
    start = { day, equity, at: nowMs };
    storage.setItem(KEY, JSON.stringify(start));
  }
  return { pnl: equity - start.equity, since: start };
}
