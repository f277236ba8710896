"""Backtest metrics on series small enough to compute by hand."""

from __future__ import annotations

import math

import pytest

from backend.backtest import metrics as m
from backend.backtest.metrics import Fill

YEAR = m.SECONDS_PER_YEAR


def test_total_return_and_cagr_over_a_year_and_under_a_day():
    assert m.total_return([100.0, 110.0, 121.0]) == pytest.approx(0.21)
    # 21 % over half a year compounds to 1.21^2 - 1 over a year
    assert m.cagr([100.0, 121.0], YEAR / 2) == pytest.approx(1.21**2 - 1)
    assert m.cagr([100.0, 121.0], 3600) is None  # under a day: not annualised


def test_sharpe_and_sortino_from_period_returns():
    rets = m.period_returns([100.0, 110.0, 99.0, 108.9])
    assert rets == pytest.approx([0.10, -0.10, 0.10])
    mean, sd = 0.1 / 3, math.sqrt(((0.1 - 0.1 / 3) ** 2 * 2 + (-0.1 - 0.1 / 3) ** 2) / 2)
    per_year = YEAR / 86_400  # daily grid
    assert m.sharpe(rets, 86_400) == pytest.approx(mean / sd * math.sqrt(per_year))
    downside = math.sqrt(0.01 / 3)
    assert m.sortino(rets, 86_400) == pytest.approx(mean / downside * math.sqrt(per_year))
    assert m.sharpe([0.01, 0.01], 60) is None  # no variation
    assert m.sortino([0.01, 0.02], 60) is None  # no losing period


def test_max_drawdown_is_the_largest_fall_from_a_running_peak():
    assert m.max_drawdown([100, 120, 90, 130, 117]) == pytest.approx(0.25)
    assert m.max_drawdown([100, 101, 102]) == 0.0


def test_historical_var_is_the_loss_at_the_5th_percentile():
    rets = [i / 100 for i in range(-10, 10)]  # 20 returns: -0.10 .. 0.09
    assert m.value_at_risk(rets, 0.95) == pytest.approx(0.10)  # ceil(0.05 * 20) = 1st smallest
    rets40 = [i / 100 for i in range(-20, 20)]
    assert m.value_at_risk(rets40, 0.95) == pytest.approx(0.19)  # 2nd smallest of 40
    assert m.value_at_risk([0.01, 0.02], 0.95) == 0.0  # no loss


def test_round_trips_win_rate_and_profit_factor_with_fees_and_a_flip():
    fills = [
        Fill(1, "A", +1, 10, 100.0, 1.0),  # open long 10
        Fill(2, "A", -1, 10, 105.0, 1.0),  # close: +50 - 2 fees = 48
        Fill(3, "B", -1, 5, 20.0, 0.5),  # open short 5
        Fill(4, "B", +1, 10, 22.0, 1.0),  # close short (-10 - 0.5 - 0.5 = -11) and open long 5 (fee 0.5)
        Fill(5, "B", -1, 5, 21.0, 0.5),  # close long: -5 - 0.5 - 0.5 = -6
    ]
    trips = m.round_trips(fills)
    assert trips == pytest.approx([48.0, -11.0, -6.0])
    assert m.win_rate(trips) == pytest.approx(1 / 3)
    assert m.profit_factor(trips) == pytest.approx(48 / 17)
    assert m.profit_factor([5.0]) is None


def test_exposure_turnover_and_fees_in_the_summary():
    ts = [0, 60_000_000_000, 120_000_000_000, 180_000_000_000]
    equity = [1000.0, 1010.0, 1000.0, 1020.0]
    gross = [0.0, 500.0, 0.0, 300.0]
    fills = [Fill(1, "A", +1, 5, 100.0, 0.5), Fill(2, "A", -1, 5, 102.0, 0.5)]
    s = m.summary(ts, equity, gross, fills, 60)
    assert s["exposure"] == pytest.approx(2 / 3)
    assert s["turnover"] == pytest.approx((500 + 510) / 1007.5)
    assert s["fees"] == pytest.approx(1.0)
    assert s["total_return"] == pytest.approx(0.02)
    assert s["round_trips"] == 1 and s["win_rate"] == 1.0
    assert s["span_s"] == 180 and s["cagr"] is None
