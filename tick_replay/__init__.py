"""tick_replay: the market-data edge of AITrader.

Reads tick files of several vendor formats (or a seeded synthetic market), normalises
them to ``common.messages.Tick``, merges files in time order with a per-symbol ``seq``,
and publishes ``TickBatch`` entries to ``md:ticks:{shard}``, as fast as possible or
paced at a multiple of real time.

Public API::

    open_ticks(paths, fmt=None) -> TickSource          # merged, sequenced file ticks (.stats)
    synthetic_ticks(n, symbols=4, seed=7) -> Iterator[Tick]
    await replay(redis_url, ticks, *, speed, shards=1, batch_max=256, maxlen=1_000_000,
                 progress=True, total=None, stop=None) -> ReplaySummary   # .to_dict()
    run(argv=None) -> int                              # the CLI body (aitrader replay)
    FORMATS                                            # format name -> Format (reader, description)
    write_canonical(path, ticks) -> int                # any ticks -> canonical CSV[.gz] / Parquet

File formats, clocks, symbols and the canonical schema: docs/data-formats.md.
"""

from tick_replay.cli import run
from tick_replay.formats import FORMATS, Format, FormatError, ReaderStats, detect_format
from tick_replay.formats.canonical import write_canonical
from tick_replay.player import ReplaySummary, replay
from tick_replay.source import TickSource, open_ticks
from tick_replay.synthetic import synthetic_ticks

__all__ = [
    "FORMATS",
    "Format",
    "FormatError",
    "ReaderStats",
    "ReplaySummary",
    "TickSource",
    "detect_format",
    "open_ticks",
    "replay",
    "run",
    "synthetic_ticks",
    "write_canonical",
]
