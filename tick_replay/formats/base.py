"""What every reader shares: the normalised record, per-file stats, file and clock helpers.

A reader is a generator ``read(path, stats) -> Iterator[Rec]`` over one file, in file
order. A ``Rec`` is a plain tuple (cheaper than a Struct on the hot path; the Tick is
built once, after the merge, when its ``seq`` is known)::

    (ts_event_ns, symbol, type, price, size, bid, bid_size, ask, ask_size, side, side_inferred)

``type`` is a ``TickType``; prices are floats in the instrument's quote currency; a
QUOTE has price = size = 0; ``side`` is +1 / -1 / 0 (unknown); ``side_inferred`` is True
when the side comes from the tick rule (the merge may then improve it with the quote
rule, see ``tick_replay.source``). Depth readers yield order-book records instead (``BOOK``
below), which the source turns into ``BookUpdate`` messages.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from common.messages import TickType

__all__ = [
    "BOOK",
    "MAX_PRICE",
    "MAX_SIZE",
    "QUOTE",
    "TRADE",
    "UNREADABLE",
    "Format",
    "FormatError",
    "Reader",
    "ReaderStats",
    "Rec",
    "WallClock",
    "crypto_symbol",
    "csv_rows",
    "epoch_day_ns",
    "fx_symbol",
    "head_bytes",
    "iso_to_ns",
    "mostly_match",
    "open_text",
    "text_lines",
    "truncated",
]

TRADE = TickType.TRADE
QUOTE = TickType.QUOTE
# The wire contract's bounds (common.messages Px / Qty): anything outside is a bad row here,
# not a dead letter downstream. NaN fails every comparison, so ``0 < x <= MAX`` rejects it too.
MAX_PRICE = 1e12
MAX_SIZE = 1e15

Rec = tuple  # (ts, symbol, type, price, size, bid, bid_size, ask, ask_size, side, side_inferred)

# ``type`` of an order-book record (depth readers), which becomes a ``BookUpdate``, not a Tick:
#   (ts, symbol, BOOK, snapshot, first_id, last_id, prev_last_id, bids, asks, 0, False)
# with ids 0 where the source has none and bids / asks lists of (price, qty) floats.
BOOK = "book"


class FormatError(ValueError):
    """A file cannot be read as the requested/detected format; the message names the file."""


@dataclass
class ReaderStats:
    """What one reader did with one file: rows seen, ticks produced, rows skipped by reason."""

    path: str
    format: str
    rows: int = 0
    ticks: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    symbols: set[str] = field(default_factory=set)
    first_ts: int | None = None
    last_ts: int | None = None
    out_of_order: int = 0  # ticks whose ts_event is earlier than the file's previous tick
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def merge(self, other: ReaderStats) -> None:
        """Add another pass's row counts (rows, skipped, notes) into this one."""
        self.rows += other.rows
        for reason, n in other.skipped.items():
            self.skip(reason, n)
        self.notes.extend(other.notes)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "ticks": self.ticks,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": self.skipped_total,
            "symbols": sorted(self.symbols),
            "first_ts_event": self.first_ts,
            "last_ts_event": self.last_ts,
            "out_of_order": self.out_of_order,
            "notes": list(self.notes),
        }


Reader = Callable[[Path, ReaderStats], Iterator[Rec]]


@dataclass(frozen=True)
class Format:
    """A named tick format: its reader, a one-line description, and how to recognise it."""

    name: str
    reader: Reader
    description: str
    name_pattern: re.Pattern[str] | None = None  # matched against the file name (case-insensitive)
    sniff: Callable[[Path, bytes], bool] | None = None  # content check on the first bytes
    books: bool = False  # yields order-book records (BOOK), not ticks


def trade_problem(ts: int, px: float, qty: float) -> str | None:
    """Why a trade row cannot become a tick (a ReaderStats skip reason), or None."""
    if not (0.0 < px < MAX_PRICE) or ts < 0:
        return "bad_price"
    if not (0.0 < qty <= MAX_SIZE):
        return "bad_size"
    return None


def mostly_match(head: bytes, pattern: re.Pattern[bytes], n: int = 20, share: float = 0.6) -> bool:
    """True when most of the first ``n`` non-blank lines of ``head`` match ``pattern``.

    Tolerant on purpose: one malformed line near the top must not make a real file unknown.
    """
    lines = head.split(b"\n")
    if len(lines) > 1 and not head.endswith(b"\n"):
        lines = lines[:-1]  # the sniff window may cut the last line
    lines = [ln for ln in lines if ln.strip()][:n]
    hits = sum(1 for ln in lines if pattern.match(ln))
    return hits >= 1 and hits >= share * len(lines)


def open_text(path: Path) -> io.TextIOBase:
    """Open a CSV file as text, transparently gunzipping ``.gz`` (checked by magic bytes)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def head_bytes(path: Path, n: int = 4096) -> bytes:
    """The first ``n`` bytes of the file's content (decompressed for gzip)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            return f.read(n)
    except (OSError, EOFError):
        return b""


_EPOCH_ORD = dt.date(1970, 1, 1).toordinal()
_DAY_NS = 86_400_000_000_000


def epoch_day_ns(day: dt.date) -> int:
    """Nanoseconds from the epoch to 00:00 UTC of ``day``."""
    return (day.toordinal() - _EPOCH_ORD) * _DAY_NS


class WallClock:
    """Convert "milliseconds since local midnight" of one date in one zone to ns epoch UTC.

    The UTC offset is looked up per wall-clock hour (25 entries), so a DST change inside the
    day (US zones switch on the hour) is handled exactly without a zoneinfo call per row.
    Ambiguous wall times (the repeated hour in autumn) take the first occurrence (fold=0).
    """

    __slots__ = ("base_ms", "constant_ms", "offsets_ms")

    def __init__(self, day: dt.date, tz: dt.tzinfo) -> None:
        self.base_ms = (day.toordinal() - _EPOCH_ORD) * 86_400_000
        midnight = dt.datetime(day.year, day.month, day.day)
        offsets = []
        for h in range(25):
            wall = midnight + dt.timedelta(hours=h)
            off = wall.replace(tzinfo=tz).utcoffset() or dt.timedelta(0)
            offsets.append(int(off.total_seconds() * 1000))
        self.offsets_ms = offsets
        self.constant_ms = offsets[0] if len(set(offsets)) == 1 else None

    @classmethod
    def named(cls, day: dt.date, zone: str) -> WallClock:
        return cls(day, ZoneInfo(zone))

    @classmethod
    def fixed(cls, day: dt.date, hours: float) -> WallClock:
        return cls(day, dt.timezone(dt.timedelta(hours=hours)))

    def to_ns_array(self, ms: np.ndarray) -> np.ndarray:
        """Vectorised ``to_ns`` over an int64 array."""
        if self.constant_ms is not None:
            return (ms + (self.base_ms - self.constant_ms)) * 1_000_000
        offsets = np.asarray(self.offsets_ms, dtype=np.int64)[np.clip(ms // 3_600_000, 0, 24)]
        return (ms + self.base_ms - offsets) * 1_000_000

    def to_ns(self, ms: int) -> int:
        """ns epoch UTC of wall-clock ``ms`` after local midnight (ms may exceed one day)."""
        off = self.constant_ms
        if off is None:
            off = self.offsets_ms[min(max(ms // 3_600_000, 0), 24)]
        return (self.base_ms + ms - off) * 1_000_000


_ISO = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)\s*$"
)


def iso_to_ns(text: str) -> int:
    """Parse ISO-8601 with an explicit offset (``Z`` / ``+HH:MM``) to ns epoch UTC, exactly.

    Up to nanosecond fractions are kept (``datetime`` would truncate to µs). A timestamp
    without an offset is refused (ValueError): its time zone would be a guess.
    """
    m = _ISO.match(text)
    if m is None:
        raise ValueError(f"not ISO-8601 with offset: {text!r}")
    y, mo, d, h, mi, s, frac, off = m.groups()
    days = dt.date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORD
    hh, mm = int(h), int(mi)
    ss = int(s) if s else 0
    if hh > 23 or mm > 59 or ss > 60:
        raise ValueError(f"time out of range: {text!r}")
    ns = ((days * 86400 + hh * 3600 + mm * 60 + ss) * 1_000_000_000) + (int(frac.ljust(9, "0")) if frac else 0)
    if off not in ("Z", "z"):
        sign = -1 if off[0] == "-" else 1
        digits = off[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:4] or 0)
        if oh > 23 or om > 59:
            raise ValueError(f"offset out of range: {text!r}")
        ns -= sign * (oh * 3600 + om * 60) * 1_000_000_000
    return ns


def csv_rows(f: io.TextIOBase, stats: ReaderStats) -> Iterator[list[str]]:
    """Rows of a vendor CSV; a row the csv module rejects (e.g. a huge field) is counted, not raised.

    Quotes are not special (no vendor file here quotes fields): a stray quote makes one bad
    row instead of swallowing the lines up to the next quote.
    """
    reader = csv.reader(f, quoting=csv.QUOTE_NONE)
    while True:
        try:
            yield from reader
            return
        except csv.Error:
            stats.skip("bad_row")
        except UNREADABLE as e:
            truncated(stats, e)
            return


# A file that ends early or is corrupt part-way (a cut gzip, a broken parquet page): what was
# read is kept, the rest is reported, nothing raises.
UNREADABLE = (EOFError, OSError, zlib.error)


def truncated(stats: ReaderStats, err: BaseException) -> None:
    stats.skip("unreadable_tail")
    stats.notes.append(f"stopped reading early (truncated or corrupt): {type(err).__name__}: {err}"[:300])


def text_lines(f: io.TextIOBase, stats: ReaderStats) -> Iterator[str]:
    """Lines of a text file; a truncated / corrupt tail ends the file (counted) instead of raising."""
    try:
        yield from f
    except UNREADABLE as e:
        truncated(stats, e)


_CURRENCIES = frozenset(
    ["USD", "EUR", "JPY", "GBP", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "DKK", "HKD", "SGD", "CNH", "CNY", "MXN", "ZAR", "TRY", "PLN", "HUF", "CZK", "XAU", "XAG"]
)
_SIX = re.compile(r"(?<![A-Za-z])([A-Za-z]{6})(?![A-Za-z])")
_CRYPTO = re.compile(
    r"(?<![a-z])([a-z0-9]{2,12}?(?:usdt|usdc|busd|fdusd|tusd|usd|btc|eth|eur|bnb))(?![a-z])"
)
_DERIVATIVE = re.compile(r"(?<![a-z])(usdm|coinm|perp|perpetual|swap|futures)(?![a-z])")


def fx_symbol(path: Path) -> str:
    """Currency pair from a file name (``truefx_usdjpy-ticks.csv`` → ``USDJPY``)."""
    tokens = [t.upper() for t in _SIX.findall(path.name)]
    for t in tokens:
        if t[:3] in _CURRENCIES and t[3:] in _CURRENCIES:
            return t
    if tokens:
        return tokens[0]
    raise FormatError(f"{path}: cannot tell the currency pair from the file name (e.g. name it *_eurusd_*)")


def crypto_symbol(path: Path) -> str:
    """Crypto pair from a file name (``spot_btcusdt_…`` → ``BTCUSDT``; ``usdm_btcusdt_…`` → ``BTCUSDT-PERP``).

    A perpetual and the spot pair are different instruments: merging both must not mix
    their prices under one symbol.
    """
    name = path.name.lower()
    m = _CRYPTO.search(name)
    if m is None:
        raise FormatError(f"{path}: cannot tell the trading pair from the file name (e.g. name it *_btcusdt_*)")
    sym = m.group(1).upper()
    return f"{sym}-PERP" if _DERIVATIVE.search(name) else sym
