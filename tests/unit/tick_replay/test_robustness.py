"""Garbage lines inside real vendor files: every reader skips and counts them, never raises."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.messages import check
from tick_replay import FormatError, open_ticks

pytestmark = pytest.mark.data

SAMPLES = {
    # file (relative to shared/data), has a header row
    "quantconnect_lean/equity_tick/20131007_ibm_Trade_Tick.csv.gz": False,
    "quantconnect_lean/equity_tick/20131007_ibm_Quote_Tick.csv.gz": False,
    "quantconnect_lean/forex_tick/20140505_eurusd_tick_quote.csv.gz": False,
    "nautilus_trader/fx_ticks/truefx_usdjpy-ticks.csv": True,
    "nautilus_trader/fx_ticks/histdata_eurusd_quote_tick_data.csv": False,
    "hftbacktest_binance/spot_btcusdt_20240808_trades.csv.gz": True,
    "hftbacktest_binance/spot_btcusdt_20240808_bbo.csv.gz": True,
    "freqtrade/binance_ethusdt_public_trades_list.csv": True,
}

_garbage = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=80),
    st.lists(st.sampled_from(["", "0", "-1", "1e999", "nan", "x", "13.5", "99999999999999999999", '"', "P", " "]),
             min_size=1, max_size=10).map(",".join),
)


def _sample(path: Path, n: int = 300) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return [line for _, line in zip(range(n), f, strict=False)]


@pytest.mark.parametrize("rel", sorted(SAMPLES))
def test_vendor_readers_survive_garbage_lines(shared_data, rel):
    header = SAMPLES[rel]
    lines = _sample(shared_data / rel)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(garbage=st.lists(_garbage, min_size=1, max_size=8), data=st.data())
    def run(garbage, data):
        body = list(lines)
        for g in garbage:
            body.insert(data.draw(st.integers(1 if header else 0, len(body))), g + "\n")
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / Path(rel).name
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "wt", newline="") as f:
                f.writelines(body)
            src = open_ticks([path])
            ticks = list(src)  # never raises
        s = src.stats[0]
        assert s.rows <= len(body) - header
        assert all(check(t) is None and (t.type == 1 or t.bid < t.ask) for t in ticks)
        assert s.skipped_total >= 1 or any(not g.strip() for g in garbage) or s.ticks > len(lines)

    run()


@pytest.mark.parametrize(
    "rel",
    [
        "quantconnect_lean/equity_tick/20131007_ibm_Trade_Tick.csv.gz",
        "quantconnect_lean/equity_tick/20131007_ibm_Quote_Tick.csv.gz",
        "hftbacktest_binance/spot_btcusdt_20240808_bbo.csv.gz",
        "nautilus_trader/crypto/binance_btcusdt-trades.parquet",
    ],
)
def test_truncated_file_keeps_what_was_read_and_reports_it(shared_data, tmp_path, rel):
    data = (shared_data / rel).read_bytes()
    cut = tmp_path / Path(rel).name
    cut.write_bytes(data[: len(data) * 2 // 3])
    if rel.endswith(".parquet"):  # a cut parquet loses its footer: refused up front, naming the file
        with pytest.raises(FormatError, match=cut.name):
            open_ticks([cut])
        return
    src = open_ticks([cut])
    ticks = list(src)
    full = list(open_ticks([shared_data / rel]))
    s = src.stats[0]
    assert 0 < len(ticks) < len(full)
    assert ticks[:-1] == full[: len(ticks) - 1]  # the last row read may be cut mid-line
    assert s.skipped.get("unreadable_tail") == 1 and any("truncated" in n for n in s.notes)
