"""The command line: ``python -m tick_replay`` and ``aitrader replay`` (which forwards here)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
import time
from collections.abc import Iterable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.config import CommonSettings, ConfigError, load
from common.messages import BookUpdate, Tick
from tick_replay.config import ReplaySettings, parse_speed
from tick_replay.formats import FORMATS, FormatError
from tick_replay.player import ReplaySummary, replay
from tick_replay.source import open_ticks
from tick_replay.synthetic import synthetic_ticks

__all__ = ["build_parser", "run"]

PROG = "tick_replay"


def _speed_arg(text: str) -> float | None:
    try:
        return parse_speed(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


def build_parser(common: CommonSettings, settings: ReplaySettings, prog: str = PROG) -> argparse.ArgumentParser:
    formats = "\n".join(f"  {name:<23} {f.description}" for name, f in FORMATS.items())
    p = argparse.ArgumentParser(
        prog=prog,
        description="Replay tick files (merged in time order) or a seeded synthetic market into md:ticks:{shard}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"formats (auto-detected from name and content unless --format is given):\n{formats}\n\n"
        "See docs/data-formats.md for clocks, units, symbol names and the canonical schema.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="tick files; none = the synthetic source")
    default_speed = "max" if settings.speed is None else settings.speed
    p.add_argument("--speed", type=_speed_arg, default=settings.speed, metavar="X|max",
                   help=f"'max' (as fast as possible) or a multiple of real time (default {default_speed})")
    p.add_argument("--format", dest="fmt", choices=sorted(FORMATS), metavar="NAME",
                   help="force the format of every PATH (default: detect per file)")
    p.add_argument("--synthetic-ticks", type=int, default=settings.synthetic_ticks, metavar="N",
                   help=f"ticks of the synthetic source (default {settings.synthetic_ticks})")
    p.add_argument("--symbols", type=_positive, default=settings.synthetic_symbols, metavar="N",
                   help=f"symbols of the synthetic source (default {settings.synthetic_symbols})")
    p.add_argument("--seed", type=int, default=settings.synthetic_seed, metavar="S",
                   help=f"seed of the synthetic source (default {settings.synthetic_seed})")
    p.add_argument("--shards", type=_positive, default=common.shards, metavar="N",
                   help=f"md:ticks:{{shard}} streams symbols hash to (default {common.shards})")
    p.add_argument("--batch-max", type=_positive, default=settings.batch_max, metavar="N",
                   help=f"most ticks per stream entry (default {settings.batch_max})")
    p.add_argument("--redis-url", default=common.redis_url, metavar="URL", help="Redis of the bus (default REDIS_URL)")
    p.add_argument("--lockstep", action="store_true",
                   help="closed loop: publish a batch, wait until the pipeline drained, repeat (reproducible runs)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="read and normalise only; publish nothing (no Redis)")
    return p


def _iso(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(summary: ReplaySummary, dry_run: bool) -> str:
    d = summary.to_dict()
    verb = "read (dry run)" if dry_run else "published"
    lines = [
        f"{verb} {d['ticks']:,} ticks" + (f" and {d['books']:,} book messages" if d["books"] else "")
        + f" in {d['entries']:,} entries in {d['duration_s']:.2f} s "
        f"({d['ticks_per_s']:,.0f} ticks/s, {d['entries_per_s']:,.0f} entries/s)"
        + ("  [interrupted]" if d["interrupted"] else ""),
        f"  speed {d['speed']}, shards {d['shards']}, batch_max {d['batch_max']}, largest entry {d['max_batch']}"
        + (f", max lag {d['max_lag_ms']:.1f} ms" if summary.speed is not None else ""),
        f"  ts_event {_iso(d['first_ts_event'])} .. {_iso(d['last_ts_event'])}",
        "  per symbol: " + ", ".join(f"{s} {n:,}" for s, n in d["per_symbol"].items()),
    ]
    if d["per_stream"]:
        lines.append("  per stream: " + ", ".join(f"{s} {n:,}" for s, n in sorted(d["per_stream"].items())))
    for st in d["reader_stats"]:
        skipped = ", ".join(f"{k} {v:,}" for k, v in st["skipped"].items()) or "none"
        lines.append(
            f"  {st['path']}: {st['format']}, rows {st['rows']:,}, ticks {st['ticks']:,}, skipped: {skipped}"
            + (f", out of order {st['out_of_order']:,}" if st["out_of_order"] else "")
        )
    return "\n".join(lines)


def _dry_run(ticks: Iterable[Tick | BookUpdate]) -> ReplaySummary:
    summary = ReplaySummary(speed=None, entries=0)
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    n = nb = 0
    t = None
    for t in ticks:
        if summary.first_ts_event is None:
            summary.first_ts_event = t.ts_event
        if type(t) is BookUpdate:
            nb += 1
            continue
        n += 1
        counts[t.symbol] = counts.get(t.symbol, 0) + 1
    summary.duration_s = time.perf_counter() - t0
    summary.ticks = n
    summary.books = nb
    summary.ticks_per_s = n / summary.duration_s if summary.duration_s > 0 else 0.0
    summary.per_symbol = counts
    summary.last_ts_event = t.ts_event if t is not None else None
    stats = getattr(ticks, "stats", None)
    if stats:
        summary.reader_stats = [s.to_dict() for s in stats]
    return summary


async def _replay_until_signal(url: str, ticks: Iterable[Tick | BookUpdate], **kw: Any) -> ReplaySummary:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            pass
    try:
        return await replay(url, ticks, stop=stop, **kw)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run(argv: list[str] | None = None, prog: str = PROG) -> int:
    """The CLI body: parse ``argv``, replay, print the summary; returns the exit code.

    0 done (also when stopped by SIGINT/SIGTERM after publishing what was read),
    1 the bus could not be reached, 2 bad usage / configuration / unreadable file.
    """
    try:
        common = load(CommonSettings)
        settings = load(ReplaySettings)
    except ConfigError as e:
        print(f"{prog}: configuration error: {e}", file=sys.stderr)
        return 2
    args = build_parser(common, settings, prog).parse_args(argv)
    try:
        if args.paths:
            ticks: Iterable[Tick | BookUpdate] = open_ticks(args.paths, args.fmt, books=True)
            total = None
        else:
            if args.synthetic_ticks < 0:
                raise FormatError("--synthetic-ticks must be >= 0")
            ticks = synthetic_ticks(args.synthetic_ticks, args.symbols, args.seed)
            total = args.synthetic_ticks
    except FormatError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        summary = _dry_run(ticks)
    else:
        from common.service import install_uvloop

        install_uvloop()
        try:
            summary = asyncio.run(_replay_until_signal(
                args.redis_url, ticks, speed=args.speed, shards=args.shards, batch_max=args.batch_max,
                maxlen=common.stream_maxlen, progress=settings.progress and not args.no_progress, total=total,
                lockstep=args.lockstep,
            ))
        except (RedisConnectionError, RedisTimeoutError, ConnectionError) as e:
            print(f"{prog}: cannot reach Redis at {args.redis_url}: {e}", file=sys.stderr)
            return 1
        except TimeoutError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 1
        except RedisError as e:
            print(f"{prog}: Redis at {args.redis_url} refused a command: {e}", file=sys.stderr)
            return 1
        except (FormatError, OSError) as e:  # a file vanished or became unreadable mid-replay
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
    print(json.dumps(summary.to_dict()) if args.json else _text(summary, args.dry_run))
    return 0
