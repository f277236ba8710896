"""Each shipped strategy on real ticks: the pattern engine in process, its signals through the
strategy engine's own signal path (no Redis), fills applied at once; every intent respects every cap."""

from __future__ import annotations

import math
import time
from decimal import Decimal

import pytest
import yaml

from common.bus import Outputs
from common.config import CommonSettings, load
from common.instruments import Instruments
from common.messages import ExecutionReport, OrderIntent, OrdStatus, OrdType, TickBatch, decode
from pattern_engine.engine import PatternEngine
from pattern_engine.pattern_config import DEFAULT_PATH, parse_pattern_config
from strategy_engine.account import AccountSnapshot
from strategy_engine.config import DEFAULT_STRATEGIES_FILE, StrategySettings
from strategy_engine.service import StrategyEngineService
from strategy_engine.strategies import load_strategies
from tests.onnx_models import make_bundle
from tick_replay import open_ticks

pytestmark = pytest.mark.data

FILES = ("quantconnect_lean/equity_tick/20131007_spy_Trade_Tick.csv.gz",  # trades: every price detector fires
         "quantconnect_lean/equity_tick/20131007_ibm_Trade_Tick.csv.gz",  # with quotes: imbalance too
         "quantconnect_lean/equity_tick/20131007_ibm_Quote_Tick.csv.gz")
EQUITY = Decimal(1_000_000)
FEE_BPS = 10.0


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    from tests.conftest import DATA

    if not DATA.is_dir():
        pytest.skip(f"real market data not found at {DATA}")
    bundle = make_bundle(tmp_path_factory.mktemp("m") / "demo", name="demo_mlp", threshold=0.5)
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    doc["detectors"]["ml_demo"] = {"type": "onnx", "model": str(bundle), "warmup": 200, "cooldown": 100}
    eng = PatternEngine(parse_pattern_config(doc))
    ticks = list(open_ticks([DATA / f for f in FILES]))
    out = []
    for i in range(0, len(ticks), 256):
        out += eng.on_batch(TickBatch(ticks[i:i + 256], ts_ingest=time.time_ns()))
    eng.close()
    return out


def _fill(intent, n: int) -> ExecutionReport:
    return ExecutionReport(
        exec_id=f"ex-{n}", client_order_id=intent.client_order_id, signal_id=intent.signal_id,
        strategy=intent.strategy, symbol=intent.symbol, side=intent.side, status=OrdStatus.FILLED,
        order_qty=intent.qty, cum_qty=intent.qty, leaves_qty=Decimal(0), last_qty=intent.qty,
        last_px=intent.ref_price, avg_px=intent.ref_price, fee=Decimal(1), ts_event=intent.ts_event,
        ts_ingest=intent.ts_ingest, ts_signal=intent.ts_signal, ts_intent=intent.ts_intent, ts_exec=time.time_ns())


def _run(cfg, signals):
    se = StrategyEngineService(load(CommonSettings, initial_cash="1000000"),
                               load(StrategySettings, fee_buffer_bps=FEE_BPS), strategies=[cfg],
                               instruments=Instruments.load())
    se.context.apply_snapshot(AccountSnapshot(EQUITY, EQUITY, EQUITY, {}, {}), time.time_ns())
    entries, legs, n = [], [], 0
    for sig in signals:
        out = Outputs()
        ctx = se.context
        before = (ctx.position(sig.symbol), ctx.available_cash())
        se._on_signal(sig, out)
        for _stream, raw in out.messages:
            msg = decode(raw)
            if not isinstance(msg, OrderIntent):
                continue
            if msg.order_type == OrdType.MARKET:
                entries.append((msg, before))
                n += 1
                fills = Outputs()
                se._on_report(_fill(msg, n), fills)  # filled at once: caps bind on real positions
                legs += [m for m in (decode(r) for _s, r in fills.messages) if isinstance(m, OrderIntent)]
            else:
                legs.append(msg)
    return se, entries, legs


@pytest.mark.parametrize("name", [s.name for s in load_strategies(DEFAULT_STRATEGIES_FILE)])
def test_shipped_strategy_on_a_real_file_respects_every_cap(signals, name):
    cfg = {s.name: s for s in load_strategies(DEFAULT_STRATEGIES_FILE)}[name].model_copy(update={"enabled": True})
    followed = [s for s in signals if s.detector in cfg.detectors or s.model_id in cfg.models]
    assert followed, f"no signal of {cfg.sources} on the file"
    se, entries, legs = _run(cfg, signals)
    assert entries, f"{name}: no intent from {len(followed)} signals"
    inst = se.instruments.get(entries[0][0].symbol)
    for it, (pos, cash) in entries:
        s = it.sizing
        d = int(it.side)
        after = pos + d * it.qty
        assert it.qty > 0 and inst.is_lot_multiple(it.qty) and it.strategy == name
        assert all(isinstance(v, float) and math.isfinite(v) for v in s.values()), s
        if s.get("flatten"):
            assert after == 0 and abs(after) < abs(pos)  # an exit only closes
            continue
        assert {"equity", "cash", "allocation", "stop_distance", "price", "target_position"} <= set(s)
        assert s[f"model_{cfg.sizing.model}"] == 1.0 and sum(1 for k in s if k.startswith("bound_")) == 1
        assert s["equity"] > 0 and s["allocation"] == cfg.allocation and s["cash"] == float(cash)
        opening = max(abs(after) - max(abs(pos), Decimal(0)), Decimal(0)) if pos * d >= 0 else max(
            abs(after) if after * d > 0 else Decimal(0), Decimal(0))
        if opening > 0:
            # position cap, cash (less the fee buffer) for what opens, the model's own target
            assert abs(after) * it.ref_price <= cfg.max_position_notional
            assert opening * it.ref_price <= cash * (1 - Decimal(FEE_BPS) / 10_000) + Decimal("1e-9")
            assert abs(after) <= Decimal(repr(s["risk_qty"]))
            if cfg.min_trade_fraction and pos * d > 0:
                assert opening >= Decimal(repr(cfg.min_trade_fraction)) * Decimal(repr(s["risk_qty"])) - inst.lot_size
        if not cfg.allow_short:
            assert after >= 0, (it, pos)
        if cfg.sizing.model == "fixed_fractional":
            # the loss at the stop is at most risk_per_trade of the allocation
            loss = float(abs(after)) * s["stop_distance"]
            assert loss <= cfg.allocation * cfg.risk_per_trade * s["equity"] * 1.000001
        if cfg.sizing.model == "kelly":
            assert s["kelly_f"] <= cfg.sizing.kelly_cap and 0 < s["kelly_p"] < 1
    if cfg.stops.any:
        assert legs, f"{name}: stops configured but no protective order sent"
        for leg in legs:
            assert leg.order_type in (OrdType.STOP, OrdType.LIMIT) and inst.is_tick_multiple(
                leg.stop_price or leg.limit_price)
    if cfg.fusion.window_ms:
        stats = se.counters
        assert any(k.startswith(f"fusion.{name}.") for k in stats) or len(entries) == len(followed)
    assert not any(k.startswith("signals_skipped.not_a_probability") for k in se.counters)
