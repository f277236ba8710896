"""The workload in nautilus_trader: a Strategy fed TradeTicks by a BacktestEngine.

Idiomatic nautilus: two ``ExponentialMovingAverage`` indicators registered for the trade
ticks (the engine updates them before ``on_trade_tick``), market orders through the order
factory into a simulated venue that executes against trades (``trade_execution=True``: the
trade prints move the venue's L1 book, so a market order fills at the tick's price), a
netting margin account, zero fees. Logging is bypassed so it costs nothing.

Timed: ``engine.run()``. Not timed (``prepare_s``): building the TradeTick objects and
handing them to the engine (it sorts them).
"""

from __future__ import annotations

import time
from decimal import Decimal

from benchmarks.peers.workload import EmaCrossSpec, PeerMissing, PeerResult, PeerSkipped, Trades

try:
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.backtest.models import MakerTakerFeeModel
    from nautilus_trader.config import LoggingConfig, StrategyConfig
    from nautilus_trader.indicators import ExponentialMovingAverage
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import TradeTick
    from nautilus_trader.model.enums import AccountType, AggressorSide, OmsType, OrderSide
    from nautilus_trader.model.events import OrderFilled
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, TradeId, Venue
    from nautilus_trader.model.instruments import Equity
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.trading.strategy import Strategy
except ImportError as e:  # an optional peer: pip install .[bench]
    _MISSING: ImportError | None = e
else:
    _MISSING = None

__all__ = ["NAME", "run_nautilus"]

NAME = "nautilus_trader"


def _strategy_class() -> type:
    class EmaCrossReverse(Strategy):
        """The workload's rule (``workload`` docstring) on nautilus' EMA indicators."""

        def __init__(self, instrument_id: InstrumentId, spec: EmaCrossSpec, orders: bool) -> None:
            super().__init__(StrategyConfig(strategy_id="EMA-CROSS-001"))
            self.instrument_id = instrument_id
            self.spec = spec
            self.orders = orders
            self.fast = ExponentialMovingAverage(spec.fast)
            self.slow = ExponentialMovingAverage(spec.slow)
            self.seen = 0
            self.last = 0
            self.position = 0
            self.crosses = 0
            self.filled: set = set()  # orders with a fill (a partial fill is one more event, not one more order)
            self.fill_price_mismatches = 0
            self.last_price = 0.0

        def on_start(self) -> None:
            self.register_indicator_for_trade_ticks(self.instrument_id, self.fast)
            self.register_indicator_for_trade_ticks(self.instrument_id, self.slow)
            self.subscribe_trade_ticks(self.instrument_id)

        def on_trade_tick(self, tick: TradeTick) -> None:
            self.seen += 1
            gap = self.fast.value - self.slow.value
            side = 1 if gap > 0.0 else (-1 if gap < 0.0 else 0)
            if side == 0 or side == self.last:
                return
            last, self.last = self.last, side
            if last == 0 or self.seen < self.spec.warmup:
                return
            self.crosses += 1
            if not self.orders:
                return
            qty = self.spec.qty if self.position == 0 else 2 * self.spec.qty
            self.position = side * self.spec.qty
            self.last_price = tick.price.as_double()
            self.submit_order(self.order_factory.market(
                instrument_id=self.instrument_id,
                order_side=OrderSide.BUY if side > 0 else OrderSide.SELL,
                quantity=Quantity.from_int(qty),
            ))

        @property
        def fills(self) -> int:
            return len(self.filled)

        def on_order_filled(self, event: OrderFilled) -> None:
            self.filled.add(event.client_order_id)
            if event.last_px.as_double() != self.last_price:
                self.fill_price_mismatches += 1

    return EmaCrossReverse


def run_nautilus(trades: Trades, spec: EmaCrossSpec, orders: bool = True) -> PeerResult:
    """Run the workload over ``trades``; ``orders=False`` runs the indicators and the rule only."""
    if _MISSING is not None:
        raise PeerMissing(f"{NAME} is not installed ({_MISSING}); pip install '.[bench]'")
    if trades.size_decimals:
        raise PeerSkipped(f"{NAME}: the workload's instrument is an Equity (whole shares); "
                          f"{trades.symbol} trades fractional sizes")
    t0 = time.perf_counter()
    venue = Venue("SIM")
    iid = InstrumentId(Symbol(trades.symbol), venue)
    dec = trades.price_decimals
    instrument = Equity(
        instrument_id=iid, raw_symbol=Symbol(trades.symbol), currency=USD, price_precision=dec,
        price_increment=Price(10.0**-dec, dec), lot_size=Quantity.from_int(1), ts_event=0, ts_init=0,
        maker_fee=Decimal(0), taker_fee=Decimal(0),
    )
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(venue=venue, oms_type=OmsType.NETTING, account_type=AccountType.MARGIN,
                     starting_balances=[Money(10**12, USD)], base_currency=USD,
                     fee_model=MakerTakerFeeModel(), trade_execution=True)
    engine.add_instrument(instrument)
    none = AggressorSide.NO_AGGRESSOR
    ticks = [TradeTick(iid, Price(px, dec), Quantity(sz, 0), none, TradeId(str(i)), ts, ts)
             for i, (ts, px, sz) in enumerate(zip(trades.ts.tolist(), trades.price.tolist(), trades.size.tolist()))]
    engine.add_data(ticks)
    strategy = _strategy_class()(iid, spec, orders)
    engine.add_strategy(strategy)
    prepare = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.run()
    seconds = time.perf_counter() - t0
    notes = []
    if orders:
        notes.append(f"{strategy.crosses} crosses, {strategy.fills} fills, "
                     f"{strategy.fill_price_mismatches} fills away from the crossing tick's price, "
                     f"{strategy.crosses - strategy.fills} orders unfilled at the end")
    engine.dispose()
    what = ("full backtest: Strategy + EMA indicators + market orders, simulated venue, netting account"
            if orders else "indicators + rule in a Strategy, no orders")
    return PeerResult(NAME, what, len(trades), seconds, strategy.fills if orders else strategy.crosses,
                      prepare, notes)
