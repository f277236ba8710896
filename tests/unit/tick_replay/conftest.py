"""Helpers for the tick_replay tests: paths into ../shared/data and a UTC ISO → ns helper."""

from __future__ import annotations

import datetime as dt

import pytest


def utc_ns(text: str) -> int:
    """'2013-10-08 08:00:00.142' (UTC) → ns since the epoch."""
    d = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1000


@pytest.fixture
def lean_tick(shared_data):
    return shared_data / "quantconnect_lean" / "equity_tick"


@pytest.fixture
def fx_dir(shared_data):
    return shared_data / "nautilus_trader" / "fx_ticks"


@pytest.fixture
def crypto_dir(shared_data):
    return shared_data / "nautilus_trader" / "crypto"


@pytest.fixture
def hft_dir(shared_data):
    return shared_data / "hftbacktest_binance"
