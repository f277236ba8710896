/** Display helpers: times, numbers, state colours. */

export function fmtNs(ns: number | null | undefined): string {
  if (!ns) return "—";
  return fmtMs(ns / 1e6);
}

export function fmtMs(ms: number): string {
  const d = new Date(ms);
  const sameDay = new Date().toDateString() === d.toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

/** A market time (ms since the epoch) in UTC, as market data is: `2013-10-07 13:17:56.123`. */
export function fmtUtc(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return "—";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

export function fmtNum(v: string | number | null | undefined, digits = 2): string {
  if (v === null || v === undefined || v === "") return "—";
  const n = typeof v === "number" ? v : Number(v);
  if (!Number.isFinite(n)) return String(v);
  return n.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** good / warn / bad / idle, for a trading state, a health verdict or a service status. */
export function tone(value: string): "good" | "warn" | "bad" | "idle" {
  switch (value) {
    case "ACTIVE":
    case "healthy":
    case "ok":
    case "completed":
    case "FILLED":
      return "good";
    case "REDUCING":
    case "degraded":
    case "queued":
    case "running":
      return "warn";
    case "HALTED":
    case "unhealthy":
    case "dead":
    case "error":
    case "failed":
    case "REJECTED":
      return "bad";
    default:
      return "idle";
  }
}

export function pnlTone(v: string | number | null | undefined): string {
  const n = Number(v);
  return !Number.isFinite(n) || n === 0 ? "" : n > 0 ? "pos" : "neg";
}
