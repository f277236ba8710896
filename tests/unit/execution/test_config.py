"""Gateway settings: AITRADER_EX_* from the environment, bad values named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.config import ConfigError, load
from execution.config import DEFAULT_RISK_FILE, ExecutionSettings
from execution.venues import build_venue


def test_defaults_and_environment(clean_env):
    s = load(ExecutionSettings)
    assert s.risk_file == DEFAULT_RISK_FILE and s.venue == "simulator"
    clean_env.setenv("AITRADER_EX_FEE_BPS", "2.5")
    clean_env.setenv("AITRADER_EX_MIN_FEE", "0.35")
    s = load(ExecutionSettings)
    assert s.fee_bps == Decimal("2.5") and s.min_fee == Decimal("0.35")


@pytest.mark.parametrize(
    ("key", "value"),
    [("AITRADER_EX_SLIPPAGE_BPS", "-1"), ("AITRADER_EX_FEE_BPS", "abc"), ("AITRADER_EX_MIN_FEE", "NaN"),
     ("AITRADER_EX_TICK_RING", "0")],
)
def test_bad_values_name_the_key(clean_env, key, value):
    clean_env.setenv(key, value)
    with pytest.raises(ConfigError, match=key):
        load(ExecutionSettings)


def test_unknown_key_is_refused(clean_env):
    clean_env.setenv("AITRADER_EX_SLIPAGE_BPS", "1")
    with pytest.raises(ConfigError, match="AITRADER_EX_SLIPAGE_BPS"):
        load(ExecutionSettings)


def test_unknown_venue_is_a_config_error(clean_env, instruments):
    clean_env.setenv("AITRADER_EX_VENUE", "nasdaq")
    with pytest.raises(ConfigError, match="AITRADER_EX_VENUE"):
        build_venue(load(ExecutionSettings), instruments)
