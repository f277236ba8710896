"""Order-book features on the live path: what book messages cost the pattern engine.

    python benchmarks/book_features.py [--batch-max 256] [--repeat 5] [--json]

Input: the Binance spot capture of ``../shared/data/hftbacktest_binance`` (trades + bbo +
depth of 2024-08-08), merged by ``tick_replay.open_ticks(..., books=True)`` and grouped into
bus entries exactly as the replay publishes them (``batch_max`` ticks and book messages per
entry). Every entry is pre-encoded; the timed loop decodes it (``decode_as``) and runs
``PatternEngine.on_batch``, with one no-op model detector so that the model matrix (with
its ``obi_<N>`` columns) is built every batch. Reported, best of ``--repeat`` passes:

- ``per entry``: µs per entry (decode + engine) for (a) ``book_levels: [1, 5, 10]``,
  (b) the same entries with ``book_levels: []`` (book messages decoded, then ignored), and
  the entries stripped of their book messages (the ticks only; entries that held only
  books dropped) with (c) ``book_levels`` on and (d) off: (c) vs (d) is the cost of the obi
  columns alone, and (a × entries − c × tick entries) / book messages what one book message
  costs in a batch (decode + apply + imbalance row);
- ``per book message``: ``SymbolBook.on_message`` + the imbalance row, one message at a
  time (``_apply_books`` with one message), p50 / p99 µs split into deltas and snapshots;
- payload: mean encoded bytes per entry with and without the book messages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from common.messages import BookUpdate, TickBatch, decode_as, encode
from pattern_engine.detectors import BatchContext, BatchDetector
from pattern_engine.engine import PatternEngine
from pattern_engine.features import FeatureParams
from pattern_engine.pattern_config import PatternConfig
from tick_replay import open_ticks
from tick_replay.player import ReplaySummary, _Out

DATA = ROOT.parent / "shared" / "data" / "hftbacktest_binance"
FILES = [DATA / f"spot_btcusdt_20240808_{k}.csv.gz" for k in ("trades", "bbo", "depth")]


class NoOp(BatchDetector):
    type_name = "bench_noop"

    def __init__(self) -> None:
        super().__init__("noop", BatchDetector.Params(warmup=0, cooldown=0))

    def evaluate(self, ctx: BatchContext) -> list:
        return []


def make_engine(levels: list[int]) -> PatternEngine:
    eng = PatternEngine(PatternConfig(features=FeatureParams(book_levels=levels), detectors=(NoOp(),)))
    eng.warm_up()
    return eng


def per_entry_us(payloads: list[bytes], levels: list[int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        eng = make_engine(levels)
        t0 = time.perf_counter()
        for p in payloads:
            eng.on_batch(decode_as(p, TickBatch))
        best = min(best, time.perf_counter() - t0)
    return best / len(payloads) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-max", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    levels = [1, 5, 10]

    events = list(open_ticks(FILES, books=True))
    out = _Out(None, 1, args.batch_max, 1, ReplaySummary())
    for e in events:
        out.add(e)
    out.seal_all()
    entries = [TickBatch(t, books=b) for _, t, b in out.take()]
    with_books = [encode(e) for e in entries]
    without = [encode(TickBatch(e.ticks)) for e in entries if e.ticks]
    n_books = sum(len(e.books) for e in entries)
    n_ticks = sum(len(e.ticks) for e in entries)

    a = b = c = d = float("inf")
    for _ in range(args.repeat):  # interleaved, best of: the machine is shared
        a = min(a, per_entry_us(with_books, levels, 1))
        b = min(b, per_entry_us(with_books, [], 1))
        c = min(c, per_entry_us(without, levels, 1))
        d = min(d, per_entry_us(without, [], 1))

    eng = make_engine(levels)
    times: dict[bool, list[float]] = {False: [], True: []}
    perf = time.perf_counter_ns
    for e in events:
        if type(e) is BookUpdate:
            t0 = perf()
            eng._apply_books((e,), None, None)
            times[e.snapshot].append((perf() - t0) / 1000)
    delta, snap = np.array(times[False]), np.array(times[True])
    res = {
        "files": [p.name for p in FILES],
        "entries": len(entries),
        "entries_with_books": sum(1 for e in entries if e.books),
        "ticks": n_ticks,
        "book_messages": n_books,
        "batch_max": args.batch_max,
        "us_per_entry_books_on": round(a, 2),
        "us_per_entry_books_ignored": round(b, 2),
        "entries_ticks_only": len(without),
        "us_per_entry_ticks_only_books_on": round(c, 2),
        "us_per_entry_ticks_only_books_off": round(d, 2),
        # the whole stream with books minus the same ticks without them, per book message
        "us_per_book_message_in_batches": round((a * len(entries) - c * len(without)) / n_books, 2),
        "delta_us_mean": round(float(delta.mean()), 2),
        "delta_levels_mean": round(float(np.mean([len(e.bids) + len(e.asks) for e in events
                                                   if type(e) is BookUpdate and not e.snapshot])), 1),
        "delta_us_p50": round(float(np.percentile(delta, 50)), 2),
        "delta_us_p99": round(float(np.percentile(delta, 99)), 2),
        "snapshot_us": [round(float(x), 1) for x in snap],
        "bytes_per_entry_with_books": int(np.mean([len(p) for p in with_books])),
        "bytes_per_entry_ticks_only": int(np.mean([len(p) for p in without])),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {n_ticks:,} ticks + {n_books:,} book messages in {len(entries):,} entries "
          f"(batch_max {args.batch_max}), best of {args.repeat}")
    print(f"per entry, decode + on_batch: {len(entries)} entries with books: book_levels [1, 5, 10] {a:.1f} µs, "
          f"book_levels [] {b:.1f} µs; the {len(without)} entries stripped of their books: book_levels on {c:.1f} µs, "
          f"off {d:.1f} µs")
    print(f"book messages in batches: {res['us_per_book_message_in_batches']:.2f} µs each (decode + apply + row)")
    print(f"one message alone: delta ({res['delta_levels_mean']} levels on average) mean {res['delta_us_mean']:.2f} µs "
          f"p50 {res['delta_us_p50']:.2f} µs p99 {res['delta_us_p99']:.2f} µs; "
          f"snapshot {', '.join(f'{x:.0f}' for x in res['snapshot_us'])} µs")
    print(f"payload: {res['bytes_per_entry_with_books']:,} B/entry with books, "
          f"{res['bytes_per_entry_ticks_only']:,} B/entry ticks only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
