import { eventMs } from "./prices";
import type { LiveMessage } from "./socket";

export type BlotterKind = "signal" | "order" | "fill";

export interface BlotterRow {
  key: number;
  kind: BlotterKind;
  /** ms since the epoch, when the panel received it */
  at: number;
  /** ms since the epoch on market time: the `ts_event` of the tick behind the signal, order or fill; null when absent */
  event: number | null;
  symbol: string;
  side: string;
  qty: string;
  price: string;
  text: string;
}

export const BLOTTER_MAX = 500;

const KIND: Record<string, BlotterKind> = { signals: "signal", orders: "order", fills: "fill" };

function str(v: unknown): string {
  return v === null || v === undefined ? "" : String(v);
}

/** A blotter row for a socket message of the signals, orders or fills channel, else null. */
export function toRow(m: LiveMessage, key: number): BlotterRow | null {
  const kind = KIND[m.channel];
  if (!kind) return null;
  const d = m.data;
  const base = { key, kind, at: Date.now(), event: eventMs(d), symbol: str(d.symbol) };
  if (kind === "signal") {
    const strength = typeof d.strength === "number" ? ` · strength ${d.strength.toFixed(3)}` : "";
    return { ...base, side: str(d.side), qty: "", price: str(d.price), text: `${str(d.detector)}${strength}` };
  }
  if (kind === "fill") {
    return { ...base, side: str(d.side), qty: str(d.last_qty), price: str(d.last_px), text: `${str(d.strategy)} · ${str(d.client_order_id)}` };
  }
  const reason = str(d.reason);
  return {
    ...base,
    side: str(d.side),
    qty: str(d.order_qty),
    price: str(d.avg_px),
    text: [str(d.status), reason, str(d.strategy), str(d.client_order_id)].filter(Boolean).join(" · "),
  };
}

/**
 * Keeps the newest BLOTTER_MAX rows and tells listeners at most every `flushMs`, so a burst of
 * thousands of events a second costs a few renders, not thousands.
 */
export class Blotter {
  rows: BlotterRow[] = [];
  private pending: BlotterRow[] = [];
  private next = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private listeners = new Set<(rows: BlotterRow[]) => void>();

  constructor(private flushMs = 250) {}

  push(m: LiveMessage): void {
    const row = toRow(m, this.next);
    if (!row) return;
    this.next += 1;
    this.pending.push(row);
    this.timer ??= setTimeout(() => this.flush(), this.flushMs);
  }

  subscribe(fn: (rows: BlotterRow[]) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private flush(): void {
    this.timer = undefined;
    this.rows = [...this.pending.reverse(), ...this.rows].slice(0, BLOTTER_MAX);
    this.pending = [];
    for (const fn of this.listeners) fn(this.rows);
  }
}
