"""The pattern file is validated at start; every error names the offending key."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from pattern_engine.detectors import Breakout, Imbalance, MeanReversion, Momentum
from pattern_engine.pattern_config import DEFAULT_PATH, load_pattern_config, parse_pattern_config


def test_shipped_pattern_file_is_valid_and_enables_the_four_rule_detectors_and_the_demo_model():
    cfg = load_pattern_config(DEFAULT_PATH)
    assert [type(d) for d in cfg.rules] == [Momentum, MeanReversion, Breakout, Imbalance]
    assert [d.name for d in cfg.rules] == ["momentum_burst", "mean_reversion", "breakout", "imbalance"]
    (ml,) = cfg.batch
    assert (ml.name, ml.type_name, ml.follows, ml.params.backend) == ("ml_demo", "onnx", "demo_mlp", "cpu")
    assert ml.model is None  # reading the file loads nothing: the engine loads it at start


def test_type_defaults_to_the_name_and_instances_may_share_a_type():
    cfg = parse_pattern_config({"detectors": {"momentum": {}, "fast_mom": {"type": "momentum", "lookback": 4}}})
    assert [(d.name, type(d), d.params.lookback) for d in cfg.rules] == [
        ("momentum", Momentum, 16), ("fast_mom", Momentum, 4)]


def test_disabled_detectors_are_kept_but_not_run():
    cfg = parse_pattern_config({"detectors": {"momentum": {"enabled": False}, "breakout": {}}})
    assert [d.name for d in cfg.detectors] == ["momentum", "breakout"]
    assert [d.name for d in cfg.rules] == ["breakout"]


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"detector": {}}, "detector: unknown section"),
        ({"features": {"fast_halflife": 0}}, "features.fast_halflife"),
        ({"features": {"window": 1}}, "features.window"),
        ({"features": {"window": 2.5}}, "features.window"),
        ({"features": {"speed": 1}}, "features.speed"),
        ({"detectors": {"wiggle": {}}}, "detectors.wiggle.type: unknown detector type 'wiggle'"),
        ({"detectors": {"m": {"type": "momentum", "treshold": 3}}}, "detectors.m.treshold"),
        ({"detectors": {"momentum": {"threshold": -1}}}, "detectors.momentum.threshold"),
        ({"detectors": {"momentum": {"threshold": "4"}}}, "detectors.momentum.threshold"),
        ({"detectors": {"momentum": {"enabled": "yes"}}}, "detectors.momentum.enabled"),
        ({"detectors": {"momentum": {"cooldown": -5}}}, "detectors.momentum.cooldown"),
        ({"detectors": {"momentum": {"lookback": 100}}}, "detectors.momentum.lookback: must be <= features.window"),
        ({"detectors": {"imbalance": {"quote_threshold": 1.5}}}, "detectors.imbalance.quote_threshold"),
        ({"detectors": {"imbalance": {"quote_threshold": 0}}}, "detectors.imbalance.quote_threshold"),
        ({"detectors": {"mean_reversion": {"threshold": 5, "max_z": 2}}}, "detectors.mean_reversion.max_z"),
        ({"detectors": {"breakout": {"min_range_bps": None}}}, "detectors.breakout.min_range_bps"),
        ({"detectors": {"bad name!": {}}}, "detectors.bad name!"),
        ({"detectors": ["momentum"]}, "detectors: must be a mapping"),
        ({"detectors": {"momentum": 3}}, "detectors.momentum: must be a mapping"),
    ],
)
def test_bad_config_raises_config_error_naming_the_key(doc, key):
    with pytest.raises(ConfigError) as e:
        parse_pattern_config(doc, "pattern.yml")
    assert str(e.value).startswith("pattern.yml: ")
    assert key in str(e.value)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read pattern config"):
        load_pattern_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("features: [1, 2\n")
    with pytest.raises(ConfigError, match=f"{bad}: invalid YAML"):
        load_pattern_config(bad)
    typo = tmp_path / "typo.yml"
    typo.write_text("detectors:\n  breakout:\n    min_range: 3\n")
    with pytest.raises(ConfigError, match=f"{typo}: detectors.breakout.min_range"):
        load_pattern_config(typo)
