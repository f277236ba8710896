"""Strategies config: the shipped file is valid and covers every detector; bad files fail naming keys."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from common.config import ConfigError
from common.messages import Side, Signal
from strategy_engine.config import DEFAULT_STRATEGIES_FILE
from strategy_engine.strategies import STRATEGY_TYPES, StrategyRouter, load_strategies, parse_strategies

DETECTORS = {"momentum_burst", "mean_reversion", "breakout", "imbalance", "ml_demo"}


def _one(**kw) -> dict:
    return {"name": "a", "detectors": ["breakout"], "allocation": 0.5, "max_position_notional": "1000"} | kw


def test_shipped_config_follows_every_detector():
    strategies = load_strategies(DEFAULT_STRATEGIES_FILE)
    assert {d for s in strategies for d in s.detectors} == DETECTORS
    assert sum(s.allocation for s in strategies if s.enabled) <= 1
    router = StrategyRouter(strategies)
    for d in DETECTORS:
        assert router.route(d, "ANY")


def test_defaults_apply():
    (s,) = parse_strategies({"strategies": [_one()]})
    assert (s.risk_per_trade, s.symbols, s.enabled, s.allow_short) == (0.02, "*", True, False)


def test_unknown_keys_are_refused_by_name():
    doc = {"strategies": [_one(colour="red", stop=3)], "extra_top": 1}
    with pytest.raises(ConfigError) as e:
        parse_strategies(doc)
    msg = str(e.value)
    assert "unknown keys" in msg and "strategies['a'].colour" in msg and "strategies['a'].stop" in msg
    assert "extra_top" in msg


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"strategies": [_one(allocation=0)]}, "allocation"),
        ({"strategies": [_one(allocation=0.7), _one(name="b", allocation=0.7)]}, "sum to 1.4"),
        ({"strategies": [_one(), _one()]}, "duplicate strategy names: a"),
        ({"strategies": [_one(max_position_notional="inf")]}, "max_position_notional"),
        ({"strategies": [_one(detectors=[])]}, "detectors"),
        ({"strategies": [_one(name="bad name")]}, "name"),
        ({"strategies": [_one(stop_floor_bps=0)]}, "stop_floor_bps"),
        ({}, "strategies"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_values_are_refused(doc, match):
    with pytest.raises(ConfigError, match=match):
        parse_strategies(doc)


def test_disabled_strategies_do_not_count_or_route():
    doc = {"strategies": [_one(allocation=0.9), _one(name="off", allocation=0.9, enabled=False)]}
    router = StrategyRouter(parse_strategies(doc))
    assert [s.name for s in router.route("breakout", "X")] == ["a"]


def test_router_matches_detector_and_symbol_list():
    router = StrategyRouter(
        parse_strategies({"strategies": [_one(symbols=["AAA", "BBB"], detectors="imbalance")]})
    )
    assert router.route("imbalance", "AAA") and not router.route("imbalance", "CCC")
    assert not router.route("breakout", "AAA")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="strategies file"):
        load_strategies(tmp_path / "none.yml")


# -- types, params, the model strategy -----------------------------------------------------------


def _sig(side=Side.BUY, strength=1.0, detector="breakout", model_id=""):
    now = time.time_ns()
    return Signal(signal_id="sg-1", symbol="AAA", detector=detector, side=side, strength=strength, price=100.0,
                  tick_seq=1, ts_event=now, ts_ingest=now, ts_signal=now, model_id=model_id)


def test_every_shipped_type_is_registered_and_the_shipped_file_uses_them():
    assert {"momentum", "mean_reversion", "breakout", "imbalance", "model", "follow"} <= set(STRATEGY_TYPES)
    types = {s.name: s.type for s in load_strategies(DEFAULT_STRATEGIES_FILE)}
    assert {types[n] for n in DETECTORS} == {"momentum", "mean_reversion", "breakout", "imbalance", "model"}


def test_type_params_are_validated_by_key_and_other_types_keys_refused():
    with pytest.raises(ConfigError) as e:
        parse_strategies({"strategies": [_one(type="mean_reversion", max_strength=-1, enter_threshold=0.5)]})
    msg = str(e.value)
    assert "strategies['a'].max_strength" in msg and "unknown keys: strategies['a'].enter_threshold" in msg
    with pytest.raises(ConfigError, match=r"strategies\['a'\].type: .*unknown strategy type 'scalper'"):
        parse_strategies({"strategies": [_one(type="scalper")]})
    (s,) = parse_strategies({"strategies": [_one(type="mean_reversion", max_strength=6)]})
    assert s.params.max_strength == 6 and s.build().decide(_sig(strength=7), Decimal(0)).reason == "too_strong"
    assert s.build().decide(_sig(strength=5), Decimal(0)).action == "target"


def test_min_strength_skips_weak_signals():
    for typ in ("momentum", "breakout", "imbalance", "follow"):
        (s,) = parse_strategies({"strategies": [_one(type=typ, min_strength=0.7)]})
        assert s.build().decide(_sig(strength=0.5), Decimal(0)).reason == "weak_signal", typ
        assert s.build().decide(_sig(strength=0.8), Decimal(0)).action == "target", typ


@pytest.mark.parametrize(
    ("side", "p", "position", "action", "reason"),
    [
        (Side.BUY, 0.75, 0, "target", ""),  # flat, P >= enter
        (Side.BUY, 0.65, 0, "skip", "below_threshold"),
        (Side.SELL, 0.72, 100, "flatten", "exit"),  # long, P(down) >= exit but < enter: flatten
        (Side.SELL, 0.9, 100, "target", ""),  # and >= enter: reverse (shorts allowed)
        (Side.SELL, 0.6, 100, "skip", "below_threshold"),  # below exit: keep the long
        (Side.BUY, 0.68, 100, "flatten", "hold_lost"),  # long, P(up) fell below hold
        (Side.BUY, 0.8, 100, "target", ""),  # long, P(up) strong: top up (sizing decides)
        (Side.BUY, 1.5, 0, "skip", "not_a_probability"),
    ],
)
def test_model_strategy_thresholds(side, p, position, action, reason):
    (s,) = parse_strategies({"strategies": [_one(type="model", models=["m"], detectors=[], allow_short=True,
                                                 enter_threshold=0.75, exit_threshold=0.7, hold_threshold=0.7)]})
    d = s.build().decide(_sig(side=side, strength=p, model_id="m"), Decimal(position))
    assert (d.action, d.reason) == (action, reason)
    assert d.p_win == (p if action == "target" else None)


def test_model_strategy_without_shorts_flattens_instead_of_reversing():
    (s,) = parse_strategies({"strategies": [_one(type="model", enter_threshold=0.6, exit_threshold=0.6)]})
    assert s.build().decide(_sig(side=Side.SELL, strength=0.9), Decimal(10)).action == "flatten"


def test_router_follows_model_ids_and_detectors_once_each():
    doc = {"strategies": [
        _one(name="m", type="model", detectors=[], models=["demo_mlp"], allocation=0.3),
        _one(name="both", detectors=["ml_demo"], models=["demo_mlp"], allocation=0.3),
    ]}
    router = StrategyRouter(parse_strategies(doc))
    assert [s.name for s in router.route("ml_demo", "X", "demo_mlp")] == ["both", "m"]
    assert [s.name for s in router.route("other_det", "X", "demo_mlp")] == ["m", "both"]
    assert router.route("ml_demo", "X") and not router.route("x", "X", "other_model")
    with pytest.raises(ConfigError, match="at least one detector or model"):
        parse_strategies({"strategies": [_one(detectors=[])]})


def test_run_time_switches_and_the_allocation_limit():
    doc = {"strategies": [_one(name="a", allocation=0.6), _one(name="b", allocation=0.5, enabled=False)]}
    router = StrategyRouter(parse_strategies(doc))
    assert "sum to 1.1" in router.enable_problem("b") and "unknown strategy 'zz'" in router.enable_problem("zz")
    assert router.set_enabled("a", False) and not router.route("breakout", "X")
    assert router.enable_problem("b") == "" and router.set_enabled("b", True)
    assert [s.name for s in router.route("breakout", "X")] == ["b"]
