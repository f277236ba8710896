"""Strategies config: the shipped file is valid and covers every detector; bad files fail naming keys."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from strategy_engine.config import DEFAULT_STRATEGIES_FILE
from strategy_engine.strategies import StrategyRouter, load_strategies, parse_strategies

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
