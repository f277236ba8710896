"""Tick file formats: one reader per vendor format, a registry, and auto-detection.

``FORMATS`` maps a format name to its ``Format`` (reader, description, recognisers).
``detect_format(path)`` tries the file-name patterns first, then a content sniff of the
first bytes; an unknown file raises ``FormatError`` naming it and the known formats.
"""

from __future__ import annotations

import re
from pathlib import Path

from tick_replay.formats import binance, canonical, fx, lean
from tick_replay.formats.base import Format, FormatError, Reader, ReaderStats, Rec, head_bytes

__all__ = ["FORMATS", "Format", "FormatError", "Reader", "ReaderStats", "Rec", "detect_format", "get_format"]


def _name(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_ALL = [
    Format("lean_trade", lean.read_lean_trade,
           "QuantConnect Lean / AlgoSeek equity trade ticks: YYYYMMDD_<sym>_Trade_Tick.csv[.gz]",
           lean.LEAN_TRADE_NAME, lean.sniff_lean_trade),
    Format("lean_quote", lean.read_lean_quote,
           "QuantConnect Lean / AlgoSeek equity quote ticks → consolidated NBBO: YYYYMMDD_<sym>_Quote_Tick.csv[.gz]",
           lean.LEAN_QUOTE_NAME, lean.sniff_lean_quote),
    Format("lean_quote_by_exchange", lean.read_lean_quote_by_exchange,
           "Lean quote ticks read as per-exchange quotes (max bid / min ask across exchanges); by name only",
           None, None),
    Format("fxcm_quote", lean.read_fxcm_quote,
           "QuantConnect Lean FXCM FX ticks (UTC-05:00 clock): YYYYMMDD_<pair>_tick_quote.csv[.gz]",
           lean.FXCM_NAME, lean.sniff_fxcm),
    Format("truefx", fx.read_truefx,
           "TrueFX quotes, header timestamp,bid,ask (ISO-8601 UTC): truefx_<pair>*.csv",
           _name(r"^truefx.*\.csv(\.gz)?$"), fx.sniff_truefx),
    Format("histdata", fx.read_histdata,
           "HistData.com tick quotes 'YYYYMMDD HHMMSSfff,bid,ask,vol' (UTC-05:00 clock): histdata_<pair>*.csv",
           _name(r"^(histdata.*|dat_ascii_[a-z]{6}_t_.*)\.csv(\.gz)?$"), fx.sniff_histdata),
    Format("nautilus_trades", binance.read_nautilus_trades,
           "nautilus_trader parquet trades (timestamp, price, quantity, buyer_maker): *<pair>*-trades.parquet",
           _name(r"^.*[-_]trades\.parquet$"), binance.sniff_nautilus_trades),
    Format("nautilus_quotes", binance.read_nautilus_quotes,
           "nautilus_trader parquet quotes (timestamp, bid, bid_size, ask, ask_size): *<pair>*-quotes.parquet",
           _name(r"^.*[-_]quotes\.parquet$"), binance.sniff_nautilus_quotes),
    Format("hftbacktest_trades", binance.read_hftbacktest_trades,
           "hftbacktest Binance trade capture (stamped by local_ts_ns): <market>_<pair>_<date>_trades.csv[.gz]",
           _name(r"^.*_trades\.csv(\.gz)?$"), binance.sniff_hftbacktest_trades),
    Format("hftbacktest_bbo", binance.read_hftbacktest_bbo,
           "hftbacktest Binance bookTicker capture (stamped by local_ts_ns): <market>_<pair>_<date>_bbo.csv[.gz]",
           _name(r"^.*_bbo\.csv(\.gz)?$"), binance.sniff_hftbacktest_bbo),
    Format("hftbacktest_depth", binance.read_hftbacktest_depth,
           "hftbacktest Binance depth capture (snapshot + diff-depth, stamped by local_ts_ns) → order-book "
           "messages: <market>_<pair>_<date>_depth.csv[.gz]",
           _name(r"^.*_depth\.csv(\.gz)?$"), binance.sniff_hftbacktest_depth, books=True),
    Format("freqtrade_trades", binance.read_freqtrade_trades,
           "freqtrade / ccxt public trades (ms timestamp, taker side): *<pair>*_public_trades*.csv",
           _name(r"^.*public_trades.*\.csv(\.gz)?$"), binance.sniff_freqtrade),
    Format("canonical", canonical.read_canonical,
           "canonical schema (ts,symbol,type,price,size,bid,bid_size,ask,ask_size,side), CSV[.gz] or Parquet",
           None, canonical.sniff_canonical),
]

FORMATS: dict[str, Format] = {f.name: f for f in _ALL}


def get_format(name: str) -> Format:
    """The format called ``name`` (FormatError listing the known names otherwise)."""
    try:
        return FORMATS[name]
    except KeyError:
        raise FormatError(f"unknown format {name!r}; known: {', '.join(FORMATS)}") from None


def detect_format(path: str | Path) -> str:
    """Name of the format of ``path``: a file-name pattern whose content sniff agrees, else any sniff.

    A name match alone is not trusted when the content says otherwise (a renamed file);
    the canonical schema is recognised by its header / parquet columns only.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    head = head_bytes(path)
    by_name = [f for f in _ALL if f.name_pattern is not None and f.name_pattern.match(path.name)]
    for f in by_name:
        if f.sniff is None or f.sniff(path, head):
            return f.name
    for f in _ALL:
        if f.sniff is not None and f.sniff(path, head):
            return f.name
    hint = f" (name looks like {by_name[0].name}, content does not)" if by_name else ""
    raise FormatError(
        f"{path}: unknown tick format{hint}; pass --format NAME (one of: {', '.join(FORMATS)}) "
        "or convert it to the canonical schema (docs/data-formats.md)"
    )
