"""The workload in backtrader: each trade is a one-price bar of a custom feed, run by Cerebro.

Idiomatic backtrader: indicators declared in the Strategy's ``__init__`` (computed in
vectorised ``once`` passes, Cerebro's default ``runonce``), ``bt.ind.CrossOver`` for the
cross (it already remembers the last nonzero difference, the workload's rule),
``order_target_size`` for stop and reverse, the broker's cheat-on-close so a market order
fills at the close of the bar that sent it (the tick's price), zero commission (the default),
no observers (``stdstats=False``: they would cost time and add nothing here).

One deviation from backtrader's stock indicators: ``bt.ind.EMA`` seeds with the simple
average of its first N values and starts after N bars; the workload's EMA starts at the first
price (nautilus' rule). ``SeededEMA`` below is that EMA, written like backtrader's own
``ExponentialSmoothing`` (a ``next`` and a ``once`` loop), so the cost is the same.

The broker executes an order when it processes the next bar (cheat-on-close only sets the
price), so a cross on the file's last tick leaves its order unfilled: one trade fewer than
the other rows then, and the note says so.

Timed: ``cerebro.run()`` (feed preload, indicators, strategy, broker). Not timed
(``prepare_s``): the datetime conversion of the trades into backtrader's float days.
"""

from __future__ import annotations

import time

from benchmarks.peers.workload import EmaCrossSpec, PeerMissing, PeerResult, Trades

try:
    import backtrader as bt
except ImportError as e:  # an optional peer: pip install .[bench]
    _MISSING: ImportError | None = e
else:
    _MISSING = None

__all__ = ["NAME", "run_backtrader"]

NAME = "backtrader"
_EPOCH_DAYS = 719163.0  # bt.date2num(datetime(1970, 1, 1))


def _classes() -> tuple[type, type, type]:
    class TickFeed(bt.feed.DataBase):
        """(float days, price, size) rows as bars with open = high = low = close = price."""

        params = (("rows", ()),)

        def start(self) -> None:
            super().start()
            self._rows = iter(self.p.rows)

        def _load(self) -> bool:
            row = next(self._rows, None)
            if row is None:
                return False
            days, px, sz = row
            lines = self.lines
            lines.datetime[0] = days
            lines.open[0] = lines.high[0] = lines.low[0] = lines.close[0] = px
            lines.volume[0] = sz
            lines.openinterest[0] = 0.0
            return True

    class SeededEMA(bt.Indicator):
        """EMA with alpha = 2 / (period + 1) that starts at the first value (the workload's rule)."""

        lines = ("ema",)
        params = (("period", 10),)

        def __init__(self) -> None:
            self.alpha = 2.0 / (self.p.period + 1.0)

        def nextstart(self) -> None:
            x = self.data[0]
            self.lines.ema[0] = self.alpha * x + (1.0 - self.alpha) * x

        def next(self) -> None:
            self.lines.ema[0] = self.alpha * self.data[0] + (1.0 - self.alpha) * self.lines.ema[-1]

        def once(self, start: int, end: int) -> None:
            src = self.data.array
            dst = self.lines.ema.array
            a = self.alpha
            prev = dst[start - 1] if start > 0 else src[start]
            for i in range(start, end):
                dst[i] = prev = a * src[i] + (1.0 - a) * prev

    class EmaCrossReverse(bt.Strategy):
        params = (("spec", EmaCrossSpec()), ("orders", True))

        def __init__(self) -> None:
            spec = self.p.spec
            fast = SeededEMA(self.data.close, period=spec.fast)
            slow = SeededEMA(self.data.close, period=spec.slow)
            self.cross = bt.ind.CrossOver(fast, slow)
            self.crosses = 0
            self.fills = 0
            self.fill_price_mismatches = 0
            self.last_price = 0.0

        def next(self) -> None:
            c = self.cross[0]
            if not c or len(self) < self.p.spec.warmup:
                return
            self.crosses += 1
            if self.p.orders:
                self.last_price = self.data.close[0]
                self.order_target_size(target=int(c) * self.p.spec.qty)

        def notify_order(self, order) -> None:
            if order.status == order.Completed:
                self.fills += 1
                if order.executed.price != self.last_price:
                    self.fill_price_mismatches += 1

    return TickFeed, SeededEMA, EmaCrossReverse


def run_backtrader(trades: Trades, spec: EmaCrossSpec, orders: bool = True) -> PeerResult:
    """Run the workload over ``trades``; ``orders=False`` runs the indicators and the rule only."""
    if _MISSING is not None:
        raise PeerMissing(f"{NAME} is not installed ({_MISSING}); pip install '.[bench]'")
    feed_cls, _, strategy_cls = _classes()
    t0 = time.perf_counter()
    days = (trades.ts / 86_400e9 + _EPOCH_DAYS).tolist()
    rows = list(zip(days, trades.price.tolist(), trades.size.tolist()))
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed_cls(rows=rows))
    cerebro.addstrategy(strategy_cls, spec=spec, orders=orders)
    cerebro.broker.setcash(1e12)
    cerebro.broker.set_coc(True)
    prepare = time.perf_counter() - t0
    t0 = time.perf_counter()
    strategy = cerebro.run()[0]
    seconds = time.perf_counter() - t0
    notes = []
    if orders:
        notes.append(f"{strategy.crosses} crosses, {strategy.fills} fills, "
                     f"{strategy.fill_price_mismatches} fills away from the crossing tick's price, "
                     f"{strategy.crosses - strategy.fills} orders unfilled at the end")
    what = ("full backtest: Strategy + indicators + market orders, broker with cheat-on-close"
            if orders else "indicators + rule in a Strategy, no orders")
    return PeerResult(NAME, what, len(trades), seconds, strategy.fills if orders else strategy.crosses,
                      prepare, notes)
