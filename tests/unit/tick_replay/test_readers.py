"""Each vendor reader on its real file(s): counts, clocks → UTC, units, book sanity."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from pathlib import Path

import pytest

from common.messages import TickType, check
from tick_replay import open_ticks
from tick_replay.formats import FORMATS, FormatError, ReaderStats, detect_format
from tick_replay.formats import lean as lean_mod
from tick_replay.formats.base import WallClock, iso_to_ns

from .conftest import utc_ns

pytestmark = pytest.mark.data


def _read(path: Path, fmt: str | None = None):
    src = open_ticks([path], fmt)
    ticks = list(src)
    return ticks, src.stats[0]


def _valid_quotes(ticks):
    for t in ticks:
        assert t.type == TickType.QUOTE
        assert 0 < t.bid < t.ask, t
        assert t.price == 0 and t.size == 0
        assert check(t) is None


# -- Lean / AlgoSeek equities --------------------------------------------------------------


def test_lean_trades_bac_edt_clock_deci_cents_and_tick_rule(lean_tick):
    ticks, st = _read(lean_tick / "20131007_bac_Trade_Tick.csv.gz")
    assert st.format == "lean_trade"
    assert st.rows == 88_172 and len(ticks) == 88_172 and st.skipped_total == 0
    # README: 04:00:00.614 -> 19:59:53.464 New York time; October 2013 is EDT (UTC-4).
    assert ticks[0].ts_event == utc_ns("2013-10-07 08:00:00.614")
    assert ticks[-1].ts_event == utc_ns("2013-10-07 23:59:53.464")
    # First row: 139400 deci-cents = $13.94, 500 shares.
    assert ticks[0].price == 13.94 and ticks[0].size == 500.0 and ticks[0].symbol == "BAC"
    assert all(10 < t.price < 20 for t in ticks)
    # Tick rule: unknown until the first price change, then +1 on upticks and -1 on downticks.
    assert ticks[0].side == 0 and ticks[1].price > ticks[0].price and ticks[1].side == 1
    prev = None
    for t in ticks[1:200]:
        if prev is not None and t.price != prev.price:
            assert t.side == (1 if t.price > prev.price else -1)
        elif prev is not None:
            assert t.side == prev.side
        prev = t
    assert [t.seq for t in ticks[:3]] == [1, 2, 3] and ticks[-1].seq == len(ticks)


def test_lean_quotes_bac_consolidated_nbbo_is_sane(lean_tick):
    ticks, st = _read(lean_tick / "20131008_bac_Quote_Tick.csv.gz")
    assert st.format == "lean_quote" and st.rows == 576_096
    assert len(ticks) == 135_174
    assert st.skipped == {"crossed_or_locked": 1838, "unchanged": 2179}
    _valid_quotes(ticks)
    assert ticks[0].ts_event == utc_ns("2013-10-08 08:00:00.142")
    assert ticks[-1].ts_event == utc_ns("2013-10-09 00:00:00.097")  # 20:00:00.097 EDT
    assert all(13 < t.bid < 15 and 13 < t.ask < 15 for t in ticks)
    # Emitted only on change: no two consecutive identical books.
    assert all(
        (a.bid, a.bid_size, a.ask, a.ask_size) != (b.bid, b.bid_size, b.ask, b.ask_size)
        for a, b in itertools.pairwise(ticks)
    )


def test_lean_quotes_ibm_skip_suspicious_and_one_sided(lean_tick):
    ticks, st = _read(lean_tick / "20131007_ibm_Quote_Tick.csv.gz")
    assert st.rows == 109_067
    assert st.skipped["suspicious"] == 1 and st.skipped["one_sided"] == 1
    _valid_quotes(ticks)
    assert all(170 < t.bid < 190 for t in ticks)


def test_lean_consolidated_reading_matches_lean_minute_quote_bars(shared_data, lean_tick):
    """Each minute's last bid/ask equals the close of QuantConnect's own minute quote bar."""
    ticks, _ = _read(lean_tick / "20131008_bac_Quote_Tick.csv.gz")
    midnight = utc_ns("2013-10-08 04:00:00")  # 00:00 EDT
    last: dict[int, tuple[float, float]] = {}
    for t in ticks:
        last[(t.ts_event - midnight) // 60_000_000_000] = (t.bid, t.ask)
    bars = (shared_data / "quantconnect_lean" / "equity_minute" / "20131008_bac_minute_quote.csv").read_text()
    checked = agree = 0
    for line in bars.splitlines():
        f = line.split(",")
        minute = int(f[0]) // 60_000
        if minute in last:
            checked += 1
            agree += last[minute] == (int(f[4]) / 10_000, int(f[9]) / 10_000)
    assert checked > 500 and agree / checked > 0.97


def test_lean_quote_by_exchange_is_available_by_name(lean_tick):
    ticks, st = _read(lean_tick / "20131009_ibm_Quote_Tick.csv.gz", "lean_quote_by_exchange")
    assert st.format == "lean_quote_by_exchange" and st.rows == 135_492
    _valid_quotes(ticks)
    assert st.skipped["crossed_or_locked"] > 0


def test_lean_fast_and_row_readers_agree(lean_tick):
    path = lean_tick / "20131009_ibm_Quote_Tick.csv.gz"
    clock = WallClock.named(dt.date(2013, 10, 9), lean_mod.NEW_YORK)
    s1, s2 = ReaderStats("a", "f"), ReaderStats("a", "f")
    fast = list(lean_mod._arrow_nbbo(path, s1, "IBM", clock))
    slow = list(lean_mod._py_nbbo(path, s2, "IBM", clock.to_ns))
    assert fast == slow and (s1.rows, s1.skipped) == (s2.rows, s2.skipped)
    path = lean_tick / "20131009_ibm_Trade_Tick.csv.gz"
    s1, s2 = ReaderStats("a", "f"), ReaderStats("a", "f")
    fast = list(lean_mod._arrow_trades(path, s1, "IBM", clock))
    slow = list(lean_mod._py_trades(path, s2, "IBM", clock.to_ns))
    assert fast == slow and (s1.rows, s1.skipped) == (s2.rows, s2.skipped)


def _copy_with_garbage(src: Path, dst: Path, lines: int, garbage_at: int, garbage: str) -> None:
    import gzip

    with gzip.open(src, "rt") as f, gzip.open(dst, "wt") as out:
        for i, line in enumerate(f):
            if i == lines:
                break
            if i == garbage_at:
                out.write(garbage + "\n")
            out.write(line)


@pytest.mark.parametrize(
    ("kind", "garbage", "falls_back"),
    [
        ("Quote", "36000001,13x8800,42800,0,0,Q,1,0", True),  # a bad number: Arrow gives up
        ("Trade", "36000001,13x9400,100,P,1,0", True),
        ("Trade", "36000001,139400,100,P,1,0,extra", False),  # wrong width: skipped by both readers
        ("Quote", "36000001,138800", False),
    ],
)
def test_lean_bad_row_mid_file_is_counted_without_losing_or_repeating_ticks(
    lean_tick, tmp_path, kind, garbage, falls_back
):
    # 60k lines span several 1 MB Arrow blocks, so the bad row is met after ticks were produced.
    name = f"20131008_bac_{kind}_Tick.csv.gz"
    clean, dirty = tmp_path / "clean" / name, tmp_path / "dirty" / name
    clean.parent.mkdir()
    dirty.parent.mkdir()
    n = 60_000 if kind == "Quote" else 40_000
    _copy_with_garbage(lean_tick / name, clean, n, -1, "")
    _copy_with_garbage(lean_tick / name, dirty, n, n - 1000, garbage)
    good, gst = _read(clean)
    got, st = _read(dirty)
    assert st.skipped.get("bad_row") == 1, st
    assert bool(st.notes) == falls_back
    assert st.rows == gst.rows + 1
    assert [t for t in got] == good


def test_lean_est_date_and_dst_day_use_zoneinfo(tmp_path):
    # December is EST (UTC-5): 09:30 local = 14:30 UTC.
    f = tmp_path / "20151215_xyz_Trade_Tick.csv"
    f.write_text("34200000,1000000,100,P,1,0\n")
    ticks, _ = _read(f)
    assert ticks[0].ts_event == utc_ns("2015-12-15 14:30:00") and ticks[0].price == 100.0
    # 2013-11-03: clocks fall back at 02:00 EDT; 01:30 is ambiguous (first occurrence, EDT),
    # 03:00 is EST.
    clock = WallClock.named(dt.date(2013, 11, 3), "America/New_York")
    assert clock.to_ns(90 * 60_000) == utc_ns("2013-11-03 05:30:00")
    assert clock.to_ns(3 * 3_600_000) == utc_ns("2013-11-03 08:00:00")


def test_lean_file_without_date_in_name_is_refused(lean_tick, tmp_path):
    f = tmp_path / "bac_trades.csv.gz"
    shutil.copy(lean_tick / "20131007_bac_Trade_Tick.csv.gz", f)
    assert detect_format(f) == "lean_trade"  # recognised by content...
    with pytest.raises(FormatError, match="bac_trades.csv.gz"):
        open_ticks([f])  # ...but its clock needs the date from the name


# -- FX -------------------------------------------------------------------------------------


def test_fxcm_fixed_utc_minus_5_and_crossed_skipped(shared_data):
    ticks, st = _read(shared_data / "quantconnect_lean" / "forex_tick" / "20140505_eurusd_tick_quote.csv.gz")
    assert st.format == "fxcm_quote" and st.rows == 58_143
    # README: 00:00:03.074 -> 23:59:58.807 on a fixed UTC-05:00 clock.
    assert ticks[0].ts_event == utc_ns("2014-05-05 05:00:03.074")
    assert ticks[-1].ts_event == utc_ns("2014-05-06 04:59:58.807")
    assert ticks[0].symbol == "EURUSD" and (ticks[0].bid, ticks[0].ask) == (1.38756, 1.38758)
    _valid_quotes(ticks)
    assert st.skipped["crossed_or_locked"] > 0  # FXCM prints many locked/crossed quotes
    assert len(ticks) + st.skipped_total == st.rows


def test_truefx_iso_utc(fx_dir):
    ticks, st = _read(fx_dir / "truefx_usdjpy-ticks.csv")
    assert st.format == "truefx" and st.rows == 1000 and st.skipped_total == 12
    assert ticks[0].symbol == "USDJPY" and ticks[0].ts_event == utc_ns("2013-01-01 22:00:00.295")
    assert ticks[-1].ts_event == utc_ns("2013-01-01 22:35:13.494")
    assert (ticks[0].bid, ticks[0].ask) == (86.655, 86.728)
    _valid_quotes(ticks)


def test_histdata_fixed_est_clock(fx_dir):
    ticks, st = _read(fx_dir / "histdata_eurusd_quote_tick_data.csv")
    assert st.format == "histdata" and st.rows == 9500
    # README: 2020-01-01 17:00:00.065 -> 23:00:52.125 EST = 22:00 -> 04:00 UTC.
    assert ticks[0].ts_event == utc_ns("2020-01-01 22:00:00.065")
    assert ticks[-1].ts_event == utc_ns("2020-01-02 04:00:52.125")
    assert ticks[0].symbol == "EURUSD"
    _valid_quotes(ticks)


# -- crypto -----------------------------------------------------------------------------------


def test_nautilus_parquet_trades_buyer_maker_is_sell(crypto_dir):
    ticks, st = _read(crypto_dir / "binance_btcusdt-trades.parquet")
    assert st.format == "nautilus_trades" and st.rows == len(ticks) == 2001
    assert ticks[0].ts_event == utc_ns("2021-01-08 00:00:00.278")
    assert ticks[-1].ts_event == utc_ns("2021-01-08 00:00:46.355")
    first = ticks[0]  # buyer_maker "True" -> seller-initiated
    assert (first.symbol, first.price, first.size, first.side) == ("BTCUSDT", 39432.48, 0.000263, -1)
    assert ticks[1].side == 1
    assert all(t.type == TickType.TRADE and 30_000 < t.price < 50_000 for t in ticks)


def test_nautilus_parquet_quotes(crypto_dir):
    ticks, st = _read(crypto_dir / "binance_btcusdt-quotes.parquet")
    assert st.format == "nautilus_quotes" and st.rows == 451
    assert ticks[0].ts_event == utc_ns("2021-01-08 00:00:01.076")
    assert (ticks[0].bid, ticks[0].bid_size, ticks[0].ask, ticks[0].ask_size) == (39432.99, 0.0031, 39433.62, 0.066851)
    _valid_quotes(ticks)


def test_hftbacktest_trades_and_bbo_share_the_local_clock(hft_dir):
    trades, tst = _read(hft_dir / "spot_btcusdt_20240808_trades.csv.gz")
    quotes, qst = _read(hft_dir / "spot_btcusdt_20240808_bbo.csv.gz")
    assert (tst.format, qst.format) == ("hftbacktest_trades", "hftbacktest_bbo")
    assert tst.rows == 9757 and qst.rows == 28_040
    assert trades[0].ts_event == 1723161254087896568  # local_ts_ns, not Binance's event time
    assert trades[0].side == -1 and trades[0].price == 61837.63 and trades[0].size == 0.02
    _valid_quotes(quotes)
    window = (utc_ns("2024-08-08 23:54:14"), utc_ns("2024-08-09 00:00:00"))
    assert all(window[0] <= t.ts_event < window[1] for t in trades + quotes)


def test_hftbacktest_usdm_is_a_different_symbol(hft_dir):
    ticks, _ = _read(hft_dir / "usdm_btcusdt_20240808_trades.csv.gz")
    assert {t.symbol for t in ticks} == {"BTCUSDT-PERP"} and len(ticks) == 21_313


def test_freqtrade_taker_side(shared_data):
    ticks, st = _read(shared_data / "freqtrade" / "binance_ethusdt_public_trades_list.csv")
    assert st.format == "freqtrade_trades" and st.rows == len(ticks) == 1000
    assert ticks[0].ts_event == utc_ns("2023-02-02 09:20:00.138")
    assert ticks[-1].ts_event == utc_ns("2023-02-02 09:23:27.493")
    assert (ticks[0].symbol, ticks[0].side, ticks[1].side) == ("ETHUSDT", 1, -1)
    assert ticks[0].price == 1666.8 and ticks[0].size == 26.062


# -- detection --------------------------------------------------------------------------------


def test_every_tick_file_is_detected(shared_data):
    expect = {
        "quantconnect_lean/equity_tick/20131007_spy_Trade_Tick.csv.gz": "lean_trade",
        "quantconnect_lean/equity_tick/20131007_bac_Quote_Tick.csv.gz": "lean_quote",
        "quantconnect_lean/forex_tick/20140506_eurusd_tick_quote.csv.gz": "fxcm_quote",
        "nautilus_trader/fx_ticks/truefx_usdjpy-ticks.csv": "truefx",
        "nautilus_trader/fx_ticks/histdata_eurusd_quote_tick_data.csv": "histdata",
        "nautilus_trader/crypto/binance_btcusdt-trades.parquet": "nautilus_trades",
        "nautilus_trader/crypto/binance_btcusdt-quotes.parquet": "nautilus_quotes",
        "hftbacktest_binance/usdm_btcusdt_20240808_trades.csv.gz": "hftbacktest_trades",
        "hftbacktest_binance/spot_btcusdt_20240809_bbo.csv.gz": "hftbacktest_bbo",
        "hftbacktest_binance/usdm_btcusdt_20240808_depth.csv.gz": "hftbacktest_depth",
        "freqtrade/binance_ethusdt_public_trades_list.csv": "freqtrade_trades",
    }
    for rel, fmt in expect.items():
        assert detect_format(shared_data / rel) == fmt, rel
    assert set(expect.values()) | {"lean_quote_by_exchange", "canonical"} == set(FORMATS)


@pytest.mark.parametrize(
    "rel",
    [
        "hftbacktest_binance/spot_btcusdt_20240808_depth.csv.gz",
        "quantconnect_lean/equity_minute/20131004_spy_minute_trade.csv",
        "lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv",
    ],
)
def test_unsupported_files_fail_with_the_file_named(shared_data, rel):
    with pytest.raises(FormatError, match=Path(rel).name.replace(".", r"\.")):
        open_ticks([shared_data / rel])


def test_iso_to_ns_keeps_nanoseconds_and_offsets():
    assert iso_to_ns("2024-01-02T14:30:00.123456789Z") == utc_ns("2024-01-02 14:30:00") + 123_456_789
    assert iso_to_ns("2024-01-02 09:30:00-05:00") == utc_ns("2024-01-02 14:30:00")
    assert iso_to_ns("2013-01-01 22:00:00.295000+00:00") == utc_ns("2013-01-01 22:00:00.295")
    with pytest.raises(ValueError):
        iso_to_ns("2024-01-02 14:30:00")  # no offset: refused, not guessed
