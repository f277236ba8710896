import { memo, useEffect, useMemo, useRef, useState } from "react";
import { ok } from "../api/client";
import { atLeast } from "../api/session";
import type { components } from "../api/schema";
import { useApp, usePoll, useSession } from "../context";
import type { Blotter, BlotterKind, BlotterRow } from "../live/blotter";
import { totalsFromPnl, totalsFromPositions, todayPnl, type DayStart, type PnlTotals } from "../live/pnl";
import type { PriceBook } from "../live/prices";
import { PriceChart } from "../components/PriceChart";
import { fmtMs, fmtNs, fmtNum, fmtUtc, pnlTone } from "../format";

type Position = components["schemas"]["PositionOut"];

/**
 * Equity, today's P&L and positions (from the socket's pnl channel, else polled), a price chart per
 * symbol with its signals and fills, open orders with cancel, the live blotter.
 */
export function LivePage({ blotter, prices }: { blotter: Blotter; prices: PriceBook }) {
  const { api, socket } = useApp();
  const { user } = useSession();
  const canTrade = atLeast(user?.role, "trader");
  const polled = usePoll(() => ok(api.GET("/positions")), 10_000, [api]);
  const orders = usePoll(() => ok(api.GET("/orders", { params: { query: { open: true, limit: 200 } } })), 3_000, [api]);
  const [livePositions, setLivePositions] = useState<Position[] | null>(null);
  const [liveTotals, setLiveTotals] = useState<PnlTotals | null>(null);
  const [seen, setSeen] = useState<string[]>(prices.symbols());
  const [chartSymbol, setChartSymbol] = useState("");
  const [rows, setRows] = useState<BlotterRow[]>(blotter.rows);
  const [kinds, setKinds] = useState<Record<BlotterKind, boolean>>({ signal: true, order: true, fill: true });
  const [symbol, setSymbol] = useState("");
  const [cancelError, setCancelError] = useState<string | null>(null);

  useEffect(() => blotter.subscribe(setRows), [blotter]);
  // open orders are re-read when an order or fill arrives: at most once a second (a busy market sends dozens a second)
  const reloadOrders = useRef({ last: 0, timer: 0 as ReturnType<typeof setTimeout> | 0 });
  useEffect(() => () => clearTimeout(reloadOrders.current.timer || undefined), []);
  useEffect(
    () =>
      socket.onMessage((m) => {
        if (m.channel === "pnl") {
          if (Array.isArray(m.data.positions)) setLivePositions(m.data.positions as Position[]);
          const t = totalsFromPnl(m.data);
          if (t) setLiveTotals(t);
        }
        if (m.channel === "fills" || m.channel === "orders") {
          const r = reloadOrders.current;
          if (r.timer) return;
          const wait = Math.max(0, r.last + ORDERS_RELOAD_MS - Date.now());
          r.timer = setTimeout(() => {
            r.timer = 0;
            r.last = Date.now();
            orders.reload();
          }, wait);
        }
      }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [socket],
  );

  useEffect(
    () =>
      prices.subscribe(() => {
        const now = prices.symbols();
        setSeen((before) => (before.join() === now.join() ? before : now));
      }),
    [prices],
  );

  const positions = livePositions ?? polled.data ?? [];
  const totals = useMemo(() => liveTotals ?? totalsFromPositions(positions), [liveTotals, positions]);
  const known = livePositions !== null || polled.data !== undefined;
  const today = useMemo(
    () => totals.today ?? (known ? todayPnl(totals.equity, Date.now()) : null),
    [known, totals.equity, totals.today],
  );
  const symbols = useMemo(() => [...new Set([...seen, ...positions.map((p) => p.symbol)])].sort(), [seen, positions]);
  const charted = symbols.includes(chartSymbol) ? chartSymbol : (symbols[0] ?? "");
  const shown = useMemo(
    () => rows.filter((r) => kinds[r.kind] && (!symbol || r.symbol.toUpperCase().includes(symbol.toUpperCase()))),
    [rows, kinds, symbol],
  );

  async function cancel(id: string) {
    setCancelError(null);
    try {
      await ok(api.POST("/orders/{client_order_id}/cancel", { params: { path: { client_order_id: id } }, body: { reason: "panel" } }));
    } catch (e) {
      setCancelError(`${id}: ${(e as Error).message}`);
    }
    orders.reload();
  }

  return (
    <div className="page">
      <section className="stats" aria-label="P&L">
        <Stat label="Equity" value={totals.equity} hint="realised net of fees + unrealised" testId="equity" />
        <Stat
          label="Today's P&L"
          value={today?.pnl ?? 0}
          hint={todayHint(today?.since)}
          testId="today-pnl"
        />
        <Stat label="Realised P&L" value={totals.realized} hint="net of fees" />
        <Stat label="Unrealised P&L" value={totals.unrealized} />
        <Stat label="Open positions" value={positions.filter((p) => Number(p.qty) !== 0).length} digits={0} />
        <Stat label="Open orders" value={orders.data?.length ?? 0} digits={0} />
      </section>

      <section className="glass card" aria-labelledby="pos-h">
        <h2 id="pos-h">Positions</h2>
        {polled.error && !livePositions && <p className="notice bad">{polled.error}</p>}
        <table className="grid">
          <thead>
            <tr>
              <th>Symbol</th>
              <th className="num">Qty</th>
              <th className="num">Avg px</th>
              <th className="num">Mark</th>
              <th className="num">Realised</th>
              <th className="num">Unrealised</th>
              <th className="num">Fees</th>
            </tr>
          </thead>
          <tbody>
            {positions.length === 0 && (
              <tr>
                <td colSpan={7} className="muted">
                  No positions.
                </td>
              </tr>
            )}
            {positions.map((p) => (
              <tr key={p.symbol}>
                <td>{p.symbol}</td>
                <td className="num">{p.qty}</td>
                <td className="num">{fmtNum(p.avg_px, 4)}</td>
                <td className="num">{fmtNum(p.mark, 4)}</td>
                <td className={`num ${pnlTone(p.realized_pnl)}`}>{fmtNum(p.realized_pnl)}</td>
                <td className={`num ${pnlTone(p.unrealized_pnl)}`}>{fmtNum(p.unrealized_pnl)}</td>
                <td className="num">{fmtNum(p.fees)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>

      <section className="glass card" aria-labelledby="chart-h">
        <div className="card-head">
          <h2 id="chart-h">Price{charted ? ` — ${charted}` : ""}</h2>
          {symbols.length > 0 && (
            <select aria-label="Chart symbol" value={charted} onChange={(e) => setChartSymbol(e.target.value)}>
              {symbols.map((s) => (
                <option key={s}>{s}</option>
              ))}
            </select>
          )}
        </div>
        {charted ? (
          <PriceChart book={prices} symbol={charted} />
        ) : (
          <p className="muted">No symbol yet: prices appear here as ticks arrive.</p>
        )}
        <p className="muted small">▲ buy signal · ▼ sell signal · ● fill (green buy, red sell)</p>
      </section>

      <section className="glass card" aria-labelledby="orders-h">
        <h2 id="orders-h">Open orders</h2>
        {orders.error && <p className="notice bad">{orders.error}</p>}
        {cancelError && (
          <p className="notice bad" role="alert">
            Cancel failed — {cancelError}
          </p>
        )}
        <table className="grid">
          <thead>
            <tr>
              <th>Order</th>
              <th>Symbol</th>
              <th>Side</th>
              <th className="num">Qty</th>
              <th className="num">Filled</th>
              <th className="num">Limit</th>
              <th>Status</th>
              <th>Strategy</th>
              <th>Accepted</th>
              <th>
                <span className="sr-only">Cancel</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {(orders.data ?? []).length === 0 && (
              <tr>
                <td colSpan={10} className="muted">
                  No open orders.
                </td>
              </tr>
            )}
            {(orders.data ?? []).map((o) => (
              <tr key={o.client_order_id}>
                <td className="mono">{o.client_order_id}</td>
                <td>{o.symbol}</td>
                <td className={o.side === "BUY" ? "pos" : "neg"}>{o.side}</td>
                <td className="num">{o.qty}</td>
                <td className="num">{o.cum_qty}</td>
                <td className="num">{o.limit_price ?? "—"}</td>
                <td>{o.status}</td>
                <td>{o.strategy}</td>
                <td>{fmtNs(o.ts_accepted)}</td>
                <td>
                  <button
                    className="ghost"
                    disabled={!canTrade}
                    title={canTrade ? "Cancel this order" : "Cancelling needs the trader role"}
                    onClick={() => void cancel(o.client_order_id)}
                  >
                    Cancel
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>

      <section className="glass card" aria-labelledby="blotter-h">
        <div className="card-head">
          <h2 id="blotter-h">Blotter</h2>
          <div className="row filters" role="group" aria-label="Blotter filters">
            {(["signal", "order", "fill"] as BlotterKind[]).map((k) => (
              <label key={k} className="check">
                <input type="checkbox" checked={kinds[k]} onChange={(e) => setKinds({ ...kinds, [k]: e.target.checked })} />
                {k}s
              </label>
            ))}
            <input aria-label="Filter by symbol" placeholder="symbol" value={symbol} onChange={(e) => setSymbol(e.target.value)} />
          </div>
        </div>
        <BlotterTable rows={shown} />
      </section>
    </div>
  );
}

/** What today's P&L is measured from: the API's UTC-day snapshot, or (until it speaks) this browser's first sight. */
export function todayHint(since: DayStart | undefined): string {
  if (!since) return "";
  if (since.server) {
    const midnight = Date.parse(`${since.day}T00:00:00Z`);
    return since.at <= midnight + 60_000 ? "since 00:00 UTC" : `since ${fmtMs(since.at)}, the API's first figure of the UTC day`;
  }
  const d = new Date(since.at);
  d.setHours(0, 0, 0, 0);
  return since.at > d.getTime() + 60_000 ? `since ${fmtMs(since.at)}, first seen by this browser today` : "since midnight";
}

function Stat({ label, value, digits = 2, hint, testId }: { label: string; value: number; digits?: number; hint?: string; testId?: string }) {
  return (
    <div className="glass stat" data-testid={testId}>
      <span className="muted">{label}</span>
      <strong className={digits ? pnlTone(value) : ""}>{fmtNum(value, digits)}</strong>
      {hint && <span className="muted small">{hint}</span>}
    </div>
  );
}

const ORDERS_RELOAD_MS = 1_000;
/** Rows drawn: the newest (the blotter keeps 500; drawing them all on every flush under load costs frames). */
const BLOTTER_SHOWN = 150;

/** The blotter's table, redrawn only when its rows change (not on every P&L or order poll). */
const BlotterTable = memo(function BlotterTable({ rows }: { rows: BlotterRow[] }) {
  return (
    <>
      <div className="scroll-box blotter-box">
        <table className="grid">
          <thead>
            <tr>
              <th title="The event's time on the market (UTC): the tick behind it">Market time (UTC)</th>
              <th title="When this browser received it">Received</th>
              <th>Kind</th>
              <th>Symbol</th>
              <th>Side</th>
              <th className="num">Qty</th>
              <th className="num">Price</th>
              <th>Detail</th>
            </tr>
          </thead>
          <tbody>
            {rows.length === 0 && (
              <tr>
                <td colSpan={8} className="muted">
                  Nothing yet: signals, orders and fills appear here as they happen.
                </td>
              </tr>
            )}
            {rows.slice(0, BLOTTER_SHOWN).map((r) => (
              <tr key={r.key}>
                <td className="mono">{fmtUtc(r.event)}</td>
                <td>{fmtMs(r.at)}</td>
                <td>
                  <span className={`chip ${r.kind === "fill" ? "good" : r.kind === "order" ? "idle" : "warn"}`}>{r.kind}</span>
                </td>
                <td>{r.symbol}</td>
                <td className={r.side === "BUY" ? "pos" : r.side === "SELL" ? "neg" : ""}>{r.side}</td>
                <td className="num">{r.qty}</td>
                <td className="num">{fmtNum(r.price, 4)}</td>
                <td className="wrap">{r.text}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {rows.length > BLOTTER_SHOWN && (
        <p className="muted small">
          The newest {BLOTTER_SHOWN} of {rows.length} shown; filter by kind or symbol to find older ones.
        </p>
      )}
    </>
  );
});
