"""The shipped YAML files agree with each other (a renamed detector must not orphan a strategy)."""

from __future__ import annotations

from pattern_engine.pattern_config import load_pattern_config
from strategy_engine.config import StrategySettings
from strategy_engine.strategies import load_strategies as _load


def load_strategies():
    return _load(StrategySettings.model_fields["strategies_path"].default)


def test_every_strategy_follows_a_detector_the_pattern_engine_runs():
    detectors = {d.name for d in load_pattern_config().detectors if d.enabled}
    strategies = load_strategies()
    assert strategies, "no strategies shipped"
    for s in strategies:
        if s.enabled:
            missing = set(s.detectors) - detectors
            assert not missing, f"strategy {s.name} follows unknown detectors {missing}"


def test_every_enabled_detector_has_a_strategy():
    followed = {d for s in load_strategies() if s.enabled for d in s.detectors}
    for d in load_pattern_config().detectors:
        if d.enabled:
            assert d.name in followed, f"detector {d.name} feeds no strategy"


def test_configuration_reference_is_up_to_date():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(root / "scripts" / "gen_config_docs.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_shipped_portfolio_limits_load():
    from strategy_engine.config import StrategySettings
    from strategy_engine.portfolio import load_portfolio

    cfg = load_portfolio(StrategySettings.model_fields["portfolio_path"].default)
    assert cfg.enabled and cfg.max_portfolio_risk == 0.10
