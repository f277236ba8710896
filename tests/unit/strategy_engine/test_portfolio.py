"""Portfolio limits: each limit with exact numbers, escalation, persistence, the gateway-state view."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest

from common.config import ConfigError
from common.messages import ControlAck, ExecutionReport, OrderIntent, OrdStatus, OrdType, Side, TimeInForce
from strategy_engine.account import AccountContext, AccountSnapshot
from strategy_engine.config import DEFAULT_PORTFOLIO_FILE
from strategy_engine.portfolio import (
    Correlation,
    CorrelationConfig,
    PortfolioConfig,
    PortfolioGuard,
    load_portfolio,
    parse_portfolio,
)

D = Decimal
DAY = 86_400 * 10**9
T0 = 20_000 * DAY + 3600 * 10**9  # an hour into a UTC day


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _ctx(equity: str = "100000", positions: dict[str, str] | None = None, prices: dict[str, str] | None = None):
    clock = Clock()
    ctx = AccountContext(stale_after_s=15, clock=clock)
    ctx.apply_snapshot(
        AccountSnapshot(D(equity), D(equity), D(equity), {k: D(v) for k, v in (positions or {}).items()},
                        {k: D(v) for k, v in (prices or {}).items()}),
        requested_ns=1,
    )
    return ctx


def _guard(ctx, allocations=None, **cfg) -> PortfolioGuard:
    base = {"correlation": None}
    base.update(cfg)
    return PortfolioGuard(PortfolioConfig.model_validate(base), ctx, allocations or {"mom": 0.2},
                          wall_ns=lambda: T0)


_n = 0


def _intent(symbol: str, side: Side, qty: str, price: str, stop: float | None = None, strategy: str = "mom"):
    global _n
    _n += 1
    return OrderIntent(
        client_order_id=f"c{_n}", signal_id=f"s{_n}", strategy=strategy, symbol=symbol, side=side, qty=D(qty),
        order_type=OrdType.MARKET, tif=TimeInForce.DAY, ref_price=D(price), tick_seq=1, ts_event=1, ts_ingest=1,
        ts_signal=1, ts_intent=1, sizing={} if stop is None else {"stop_distance": stop},
    )


def _book(g: PortfolioGuard, rep) -> None:
    """What the engine does with a report: book it to its strategy, then tell the guard."""
    name = g.books.apply_report(rep)
    if name is not None:
        g.on_fill(name)


def _fill(strategy: str, symbol: str, side: Side, qty: str, px: str, exec_id: str, fee: str = "0"):
    return ExecutionReport(
        exec_id=exec_id, client_order_id=f"o-{exec_id}", signal_id="s", strategy=strategy, symbol=symbol, side=side,
        status=OrdStatus.FILLED, order_qty=D(qty), cum_qty=D(qty), leaves_qty=D(0), last_qty=D(qty), last_px=D(px),
        avg_px=D(px), fee=D(fee), ts_event=1, ts_ingest=1, ts_signal=1, ts_intent=1, ts_exec=0,
    )


def _set_equity(ctx: AccountContext, equity: str) -> None:
    ctx.equity = D(equity)


# -- configuration -------------------------------------------------------------------------
def test_shipped_file_and_defaults_match_the_seed_design():
    cfg = load_portfolio(DEFAULT_PORTFOLIO_FILE)
    assert cfg == PortfolioConfig()
    assert cfg.max_portfolio_risk == 0.10
    assert (cfg.daily_loss.reduce, cfg.daily_loss.halt) == (0.05, 0.075)
    assert (cfg.drawdown.reduce, cfg.drawdown.halt) == (0.15, 0.20)
    assert parse_portfolio(None) == PortfolioConfig()


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"portfolio": {"max_portfolio_risc": 0.1}}, "portfolio.max_portfolio_risc"),
        ({"portfolio": {"correlation": {"treshold": 0.5}}}, "portfolio.correlation.treshold"),
        ({"portfolio": {"daily_loss": {"reduce": 0.05, "hlat": 0.1}}}, "portfolio.daily_loss.hlat"),
        ({"portfolio": {}, "limits": {}}, "limits"),
        ({"portfolio": {"max_portfolio_risk": -1}}, "portfolio.max_portfolio_risk"),
        ({"portfolio": {"drawdown": {"reduce": 0.2, "halt": 0.1}}}, "portfolio.drawdown"),
        ({"portfolio": {"correlation": {"window": 10, "min_samples": 20}}}, "portfolio.correlation"),
    ],
)
def test_bad_config_is_refused_naming_the_key(doc, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_portfolio(doc, "t")


def test_missing_file_fails_fast(tmp_path: Path):
    with pytest.raises(ConfigError, match="portfolio file"):
        load_portfolio(tmp_path / "nope.yml")


# -- exposure limits, on each intent -------------------------------------------------------
def test_concentration_exact_boundary():
    ctx = _ctx(positions={"AAA": "100"}, prices={"AAA": "100"})  # 10000 = 0.10 of 100000
    g = _guard(ctx, max_symbol_concentration=0.25, max_portfolio_risk=None)
    assert g.check(_intent("AAA", Side.BUY, "150", "100")) is None  # 250 x 100 = 25000 = 0.25: at the limit
    assert g.check(_intent("AAA", Side.BUY, "151", "100")) == "concentration"  # 0.2510
    assert g.blocked == {"concentration": 1}
    assert "AAA would be 0.2510 of equity (limit 0.25)" in g.last_block
    # short side counts by |position|
    assert g.check(_intent("BBB", Side.SELL, "251", "100")) == "concentration"


def test_portfolio_risk_sums_the_loss_at_every_stop():
    ctx = _ctx(positions={"AAA": "1000", "OLD": "100"}, prices={"AAA": "100", "OLD": "200"})
    g = _guard(ctx, max_portfolio_risk=0.10, max_symbol_concentration=None, default_stop_fraction=0.01)
    g.stops["AAA"] = 5.0  # AAA opened by the engine with a 5.0 stop: 1000 x 5 = 5000
    # OLD was not opened here: 1% of 200 = 2.0 a unit -> 100 x 2 = 200; so 5200 at risk already.
    assert g.check(_intent("BBB", Side.BUY, "800", "50", stop=6.0)) is None  # + 4800 = 10000 = 0.10
    assert g.stops["BBB"] == 6.0
    # BBB is not filled yet but its intent was not published (check does not add pending): BBB 801 adds 4806.
    assert g.check(_intent("BBB", Side.BUY, "801", "50", stop=6.0)) == "portfolio_risk"
    assert "10006.00 = 0.1001 of equity 100000.00 (limit 0.1)" in g.last_block
    # without a recorded stop the intent counts at default_stop_fraction of its price: 0.5 a unit
    assert g.check(_intent("CCC", Side.BUY, "9600", "50")) is None  # 5200 + 4800
    assert g.check(_intent("CCC", Side.BUY, "9602", "50")) == "portfolio_risk"


def test_pending_intents_count_as_exposure():
    ctx = _ctx(prices={"AAA": "100"})
    g = _guard(ctx, max_symbol_concentration=0.25, max_portfolio_risk=None)
    first = _intent("AAA", Side.BUY, "200", "100")
    assert g.check(first) is None
    ctx.add_pending(first)  # the service does this once it publishes
    assert g.check(_intent("AAA", Side.BUY, "50", "100")) is None  # 250 -> 0.25
    assert g.check(_intent("AAA", Side.BUY, "51", "100")) == "concentration"


def test_reducing_intents_always_pass_even_over_every_limit():
    ctx = _ctx(positions={"AAA": "1000"}, prices={"AAA": "100"})  # 1.0 of equity: far over 0.25
    g = _guard(ctx, max_symbol_concentration=0.25, max_portfolio_risk=0.003)  # risk now 1000 = 0.01
    assert g.check(_intent("AAA", Side.SELL, "400", "100")) is None
    assert g.check(_intent("AAA", Side.SELL, "1000", "100")) is None  # to flat
    assert g.check(_intent("AAA", Side.SELL, "1250", "100")) is None  # flips short 250: opens, 0.25 passes
    assert g.check(_intent("AAA", Side.SELL, "1251", "100")) == "concentration"  # short 251: 0.2510
    assert g.check(_intent("AAA", Side.BUY, "1", "100")) == "concentration"


def _series(n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))


def test_correlation_groups_from_event_time_samples():
    c = Correlation(CorrelationConfig(threshold=0.8, max_exposure=0.5, window=50, min_samples=20, sample_s=1.0))
    a, noise = _series(60, 1), _series(60, 2)
    for i in range(60):
        ts = (1000 + i) * 10**9
        c.observe("AAA", float(a[i]), ts)
        c.observe("BBB", float(a[i] * 2), ts + 1)  # the same returns: correlation 1
        c.observe("CCC", float(noise[i]), ts + 2)  # independent
        if i < 20:
            assert c.group("AAA") == {"AAA"}  # fewer than min_samples returns: no group yet
    assert c.group("AAA") == {"AAA", "BBB"} == c.group("BBB")
    assert c.group("CCC") == {"CCC"}
    assert c.group("ZZZ") == {"ZZZ"}
    assert len(c.rows) == 51  # window + 1 prices


def test_correlated_exposure_counts_the_group_together():
    ctx = _ctx(positions={"AAA": "300", "CCC": "300"}, prices={"AAA": "100", "BBB": "200", "CCC": "100"})
    g = _guard(ctx, max_symbol_concentration=None, max_portfolio_risk=None,
               correlation={"threshold": 0.8, "max_exposure": 0.5, "window": 50, "min_samples": 20})
    a, noise = _series(40, 1), _series(40, 2)
    for i in range(40):
        ts = (1000 + i) * 10**9
        g.observe("AAA", float(a[i]), ts)
        g.observe("BBB", float(a[i] * 2), ts)
        g.observe("CCC", float(noise[i]), ts)
    ctx.prices.update({"AAA": D(100), "BBB": D(200), "CCC": D(100)})
    # AAA (30000) and BBB are one group: 30000 + 100 x 200 = 50000 = 0.5 -> at the limit
    assert g.check(_intent("BBB", Side.BUY, "100", "200")) is None
    assert g.check(_intent("BBB", Side.BUY, "101", "200")) == "correlated_exposure"
    assert "2 correlated symbols (AAA, BBB) would hold 50200.00 = 0.5020" in g.last_block
    # CCC is in no group: only the per-symbol limits apply to it
    assert g.check(_intent("CCC", Side.BUY, "4000", "100")) is None


def test_nothing_opens_in_a_scope_known_reducing_or_halted():
    ctx = _ctx(positions={"AAA": "100"}, prices={"AAA": "100"})
    g = _guard(ctx)
    g.states["strategy:mom"] = ("REDUCING", "x")
    assert g.check(_intent("AAA", Side.BUY, "1", "100")) == "trading_state"
    assert g.check(_intent("AAA", Side.SELL, "50", "100")) is None  # reducing passes
    assert g.check(_intent("AAA", Side.BUY, "1", "100", strategy="other")) is None
    g.states["global"] = ("HALTED", "y")
    assert g.check(_intent("AAA", Side.SELL, "50", "100", strategy="other")) == "trading_state"


def test_disabled_checks_nothing():
    ctx = _ctx(positions={"AAA": "1000"}, prices={"AAA": "100"})
    g = _guard(ctx, enabled=False)
    assert g.check(_intent("AAA", Side.BUY, "100000", "100")) is None
    assert g.evaluate(T0) == []


# -- loss limits, escalating through the gateway's states ----------------------------------
def test_daily_loss_reduces_then_halts_global_once_per_level():
    ctx = _ctx("100000")
    g = _guard(ctx)
    assert g.evaluate(T0) == [] and g.day_start == 100000.0
    _set_equity(ctx, "95001")
    assert g.evaluate(T0 + 1) == []  # 0.04999
    _set_equity(ctx, "95000")  # 0.05: at the limit
    [ctl] = g.evaluate(T0 + 2)
    assert (ctl.command, ctl.scope, ctl.actor) == ("kill.reduce", "global", "auto:portfolio")
    assert ctl.reason.startswith("daily_loss: daily loss 0.0500 of the day's starting equity 100000.00 "
                                 "(equity 95000.00; limits reduce 0.05, halt 0.075)")
    assert ctl.args == {"limit": "daily_loss", "level": "REDUCING"}
    assert g.states["global"][0] == "REDUCING"
    assert g.evaluate(T0 + 3) == []  # sent once: an operator's release is not overruled
    _set_equity(ctx, "92500")  # 0.075: the harder limit
    [ctl] = g.evaluate(T0 + 4)
    assert (ctl.command, ctl.scope) == ("kill.engage", "global")
    assert g.states["global"][0] == "HALTED"
    assert [c.request_id for c in g.outbox] and len(g.outbox) == 2
    # recovered, then breached again: sent again
    _set_equity(ctx, "99000")
    assert g.evaluate(T0 + 5) == []
    assert "daily_loss|global" not in g.sent
    _set_equity(ctx, "94000")
    [ctl] = g.evaluate(T0 + 6)
    assert ctl.command == "kill.reduce"


def test_a_new_utc_day_starts_from_the_current_equity():
    ctx = _ctx("100000")
    g = _guard(ctx)
    g.evaluate(T0)
    _set_equity(ctx, "94000")
    assert len(g.evaluate(T0 + 1)) == 1
    assert g.evaluate(T0 + DAY) == []  # a new day: 94000 is its start
    assert (g.day_start, g.sent) == (94000.0, {})


def test_drawdown_from_the_peak():
    ctx = _ctx("100000")
    g = _guard(ctx, daily_loss={"reduce": None, "halt": None})
    g.evaluate(T0)
    _set_equity(ctx, "120000")
    g.evaluate(T0 + 1)
    assert g.peak == 120000.0
    _set_equity(ctx, "102001")  # 0.149992
    assert g.evaluate(T0 + 2) == []
    _set_equity(ctx, "102000")  # 0.15
    [ctl] = g.evaluate(T0 + 3)
    assert ctl.command == "kill.reduce" and ctl.reason.startswith(
        "drawdown: drawdown 0.1500 from the peak equity 120000.00 (equity 102000.00")
    _set_equity(ctx, "96000")  # 0.20
    [ctl] = g.evaluate(T0 + 4)
    assert ctl.command == "kill.engage" and ctl.scope == "global"


def test_strategy_daily_loss_moves_only_that_strategy():
    ctx = _ctx("100000", prices={"AAA": "100"})
    g = _guard(ctx, {"mom": 0.2, "rev": 0.2})
    g.evaluate(T0)  # day start 100000: each strategy's capital is 20000
    _book(g, _fill("mom", "AAA", Side.BUY, "100", "100", "e1", fee="2"))
    _book(g, _fill("mom", "AAA", Side.BUY, "100", "100", "e1", fee="2"))  # the same fill again: once
    _book(g, _fill("rev", "AAA", Side.SELL, "10", "100", "e2"))
    ctx.mark("AAA", D("90.02"))  # mom: -2 fee + 100 x (90.02 - 100) = -1000 = 0.05 of 20000
    ctx.equity = D("100000")  # the portfolio itself is flat: only the strategy limit speaks
    [ctl] = g.evaluate(T0 + 1)
    assert (ctl.command, ctl.scope) == ("kill.reduce", "strategy:mom")
    assert ctl.reason.startswith("strategy_daily_loss: strategy mom lost 1000.00 today = 0.0500 of its capital "
                                 "20000.00 (allocation 0.2; limits reduce 0.05, halt 0.1)")
    ctx.mark("AAA", D("80.02"))
    [ctl] = g.evaluate(T0 + 2)
    assert (ctl.command, ctl.scope) == ("kill.engage", "strategy:mom")
    assert "strategy:rev" not in g.states  # rev gained


def test_state_survives_a_restart_and_the_breach_is_not_forgiven():
    ctx = _ctx("100000", prices={"AAA": "100"})
    g = _guard(ctx)
    g.evaluate(T0)
    _set_equity(ctx, "130000")
    g.evaluate(T0 + 1)
    _book(g, _fill("mom", "AAA", Side.BUY, "10", "100", "e1"))
    saved = {k.encode(): v.encode() for k, v in g.dump().items()}
    books = {n.encode(): g.books.dump_one(n).encode() for n in g.books.books}

    ctx2 = _ctx("110000", prices={"AAA": "100"})  # restarted; the broker says 110000
    g2 = _guard(ctx2)
    assert g2.restore(saved) and g2.books.restore(books) == 1
    assert (g2.day_start, g2.peak) == (100000.0, 130000.0)
    assert g2.books.books["mom"].qty == {"AAA": D(10)} and g2.books.position("mom", "AAA") == D(10)
    _set_equity(ctx2, "110500")  # 0.15 below the stored peak of 130000
    [ctl] = g2.evaluate(T0 + 2)
    assert ctl.args["limit"] == "drawdown"
    # garbage in the hash: start afresh, do not crash
    g3 = _guard(_ctx())
    assert not g3.restore({b"day": b"x", b"peak": b"1"})
    assert not g3.restore({b"day": b"1", b"day_start": b"nan"})
    assert not g3.restore({})
    assert g3.peak is None


def test_never_evaluates_before_the_account_is_loaded():
    ctx = AccountContext()
    g = PortfolioGuard(PortfolioConfig(), ctx, {})
    assert g.evaluate(T0) == [] and g.day_start is None


def test_states_follow_the_gateways_acks():
    from common.messages import Control

    g = _guard(_ctx())
    g.on_command(Control(request_id="r1", command="kill.reduce", scope="strategy:mom"))
    g.on_ack(ControlAck(request_id="r1", service="execution", ok=True, state="REDUCING", detail="d"))
    assert g.states["strategy:mom"][0] == "REDUCING"
    g.on_command(Control(request_id="r2", command="kill.release", scope="strategy:mom", reason="ok", actor="me"))
    g.on_ack(ControlAck(request_id="r2", service="execution", ok=True, state="ACTIVE"))
    assert "strategy:mom" not in g.states
    g.on_ack(ControlAck(request_id="unknown", service="execution", ok=True, state="HALTED"))
    assert g.states == {}
    g.on_global_mirror({b"state": b"HALTED", b"reason": b"auto"})
    assert g.states["global"] == ("HALTED", "auto")
    assert "global HALTED (auto)" in g.describe()
    g.on_global_mirror({b"state": b"ACTIVE"})
    assert g.states == {}
    assert math.isfinite(len(g.describe()))
