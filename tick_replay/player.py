"""Publishing ticks to the bus: ``md:ticks:{shard}`` entries of ``TickBatch``, as fast as possible or paced.

Two modes:

- ``speed=None`` — as fast as possible: ticks are grouped per shard into batches of up to
  ``batch_max``; many entries go in one pipelined round trip, and the next round trip is
  built while the previous one is in flight (one pipeline at a time, so per-stream order
  is kept).
- ``speed=X`` — real time × X, open loop: tick *i* is due at
  ``start + (ts_event_i − ts_event_0) / X`` (computed from the start, so sleeps never
  accumulate drift). Everything due by now goes out together — one entry per shard —
  so at low rates an entry holds one tick and when the publisher falls behind batches
  grow (natural batching).

- ``lockstep=True`` — closed loop, for reproducible runs: publish one batch of up to
  ``batch_max`` ticks, then wait until every consumer group of the pipeline has drained
  (nothing undelivered, nothing pending) before the next. Each stage then sees the same
  inputs in the same grouping on every run, so the same files give the same orders, not
  only the same signals. Slower than ``max``; latency figures from it are not meaningful.

Order-book messages (``BookUpdate``, from depth files) travel in the same entries as the
ticks of their symbol's shard, in ``TickBatch.books``, in stream order; an entry holds up to
``batch_max`` ticks and book messages together. Within an entry the engine re-interleaves
them by ``ts_event`` (``TickBatch``'s order rule), which gives back the stream order because
the source emits book messages before ticks stamped the same instant. Summary counters and
pacing count ticks and book messages alike.

Each entry's ``TickBatch.ts_ingest`` is ``time.time_ns()`` taken right before its XADD is
queued; consumers use it as the bus-entry stamp. Streams are capped with ``MAXLEN ~``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from common.bus import Publisher, connect, pipeline_streams, wait_drained
from common.messages import BookUpdate, Tick, TickBatch, encode
from common.streams import shard_for, ticks_stream

__all__ = ["PIPELINE_ENTRIES", "ReplaySummary", "replay"]

PIPELINE_ENTRIES = 64  # entries per round trip in max-speed mode (64 × 256 ticks ≈ 1.3 MB)
_SLEEP_MIN_S = 0.0005  # closer than this to due time: publish now instead of sleeping


@dataclass
class ReplaySummary:
    """What a replay did. ``to_dict()`` gives a JSON-ready dict."""

    ticks: int = 0
    books: int = 0  # order-book messages published (depth files)
    entries: int = 0
    per_symbol: dict[str, int] = field(default_factory=dict)
    per_stream: dict[str, int] = field(default_factory=dict)  # entries per stream
    duration_s: float = 0.0
    ticks_per_s: float = 0.0
    entries_per_s: float = 0.0
    first_ts_event: int | None = None
    last_ts_event: int | None = None
    speed: float | None = None
    shards: int = 1
    batch_max: int = 256
    max_batch: int = 0  # largest entry published (ticks)
    max_lag_ms: float = 0.0  # paced mode: worst lateness of a publish behind its due time
    interrupted: bool = False
    reader_stats: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_symbol"] = dict(sorted(self.per_symbol.items()))
        d["speed"] = "max" if self.speed is None else self.speed
        return d


class _Out:
    """Per-shard pending ticks and the publishing round trips."""

    def __init__(self, redis: Any, shards: int, batch_max: int, maxlen: int, summary: ReplaySummary) -> None:
        self.redis = redis
        self.shards = shards
        self.batch_max = batch_max
        self.maxlen = maxlen
        self.summary = summary
        self.streams = [ticks_stream(i) for i in range(shards)]
        self.publisher = Publisher(redis, maxlen, wait_refused=True)  # a full Redis: hold back, never drop
        self.pending: list[list[Tick]] = [[] for _ in range(shards)]
        self.pending_books: list[list[BookUpdate]] = [[] for _ in range(shards)]
        self.full: list[tuple[int, list[Tick], list[BookUpdate]]] = []  # batches ready to go, in order
        self.shard_of: dict[str, int] = {}
        self.counts: dict[str, int] = {}  # ticks per symbol
        self.n = 0  # ticks added
        self.n_books = 0  # book messages added
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def add(self, t: Tick | BookUpdate) -> None:
        """Queue one tick (or book message) on its shard (sealing the shard's batch when full) and count it."""
        if self.first_ts is None:
            self.first_ts = t.ts_event
        self.last_ts = t.ts_event
        sym = t.symbol
        s = self.shard_of.get(sym)
        if s is None:
            s = self.shard_of[sym] = shard_for(sym, self.shards)
            self.counts[sym] = 0
        p = self.pending[s]
        if type(t) is BookUpdate:
            self.n_books += 1
            pb = self.pending_books[s]
            pb.append(t)
            if len(p) + len(pb) >= self.batch_max:
                self.seal(s)
            return
        self.n += 1
        self.counts[sym] += 1
        p.append(t)
        if len(p) >= self.batch_max or (self.n_books and len(p) + len(self.pending_books[s]) >= self.batch_max):
            self.seal(s)

    def seal(self, shard: int) -> None:
        ticks = self.pending[shard]
        books = self.pending_books[shard]
        if ticks or books:
            self.full.append((shard, ticks, books))
            self.pending[shard] = []
            self.pending_books[shard] = []  # a fresh list: the sealed entry keeps its own

    def seal_all(self) -> None:
        for s in range(self.shards):
            self.seal(s)

    def take(self, n: int | None = None) -> list[tuple[int, list[Tick], list[BookUpdate]]]:
        if n is None or n >= len(self.full):
            out, self.full = self.full, []
        else:
            out, self.full = self.full[:n], self.full[n:]
        return out

    async def send(self, batches: list[tuple[int, list[Tick], list[BookUpdate]]]) -> None:
        if not batches:
            return
        per_stream = self.summary.per_stream
        biggest = self.summary.max_batch
        items = []
        for shard, ticks, books in batches:
            stream = self.streams[shard]
            # Stamped as late as possible: right before this entry's XADD is queued.
            items.append((stream, encode(TickBatch(ticks, time.time_ns(), books=books))))
            per_stream[stream] = per_stream.get(stream, 0) + 1
            biggest = max(biggest, len(ticks) + len(books))
        self.summary.max_batch = biggest
        self.summary.entries += len(batches)
        await self.publisher.publish(items)


async def replay(
    redis_url: str,
    ticks: Iterable[Tick | BookUpdate],
    *,
    speed: float | None,
    shards: int = 1,
    batch_max: int = 256,
    maxlen: int = 1_000_000,
    progress: bool = True,
    total: int | None = None,
    stop: asyncio.Event | None = None,
    lockstep: bool = False,
    drain_timeout_s: float = 120.0,
) -> ReplaySummary:
    """Publish ``ticks`` (in the order given) to ``md:ticks:{shard}`` and return a summary.

    ``speed=None`` publishes as fast as possible; ``speed=X`` (> 0) paces at X × real
    time. Symbols map to shards with ``common.streams.shard_for(symbol, shards)``.
    ``total`` (if known) sizes the progress bar (tqdm on stderr; shown only when
    ``progress`` and stderr is a TTY). Setting ``stop`` ends the replay early: what was
    read is published and the summary says ``interrupted``. Reader stats are included
    when ``ticks`` is a ``TickSource``.
    """
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be > 0 or None (max), got {speed!r}")
    if batch_max < 1 or shards < 1:
        raise ValueError("batch_max and shards must be >= 1")
    summary = ReplaySummary(speed=speed, shards=shards, batch_max=batch_max)
    redis = connect(redis_url)
    bar = _progress_bar(progress, total)
    t0 = time.perf_counter()
    out = _Out(redis, shards, batch_max, maxlen, summary)
    try:
        if lockstep:
            await _lockstep(ticks, out, summary, bar, stop, drain_timeout_s)
        elif speed is None:
            await _fast(ticks, out, summary, bar, stop)
        else:
            await _paced(ticks, out, summary, bar, speed, stop)
    finally:
        if bar is not None:
            bar.close()
        out.publisher.close()
        await redis.aclose()
    summary.ticks = out.n
    summary.books = out.n_books
    summary.per_symbol = out.counts
    summary.first_ts_event, summary.last_ts_event = out.first_ts, out.last_ts
    summary.duration_s = time.perf_counter() - t0
    if summary.duration_s > 0:
        summary.ticks_per_s = summary.ticks / summary.duration_s
        summary.entries_per_s = summary.entries / summary.duration_s
    stats = getattr(ticks, "stats", None)
    if stats:
        summary.reader_stats = [s.to_dict() for s in stats]
    return summary


def _progress_bar(progress: bool, total: int | None) -> Any:
    if not progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tick", unit_scale=True, file=sys.stderr, smoothing=0.1, mininterval=0.5)


async def _fast(ticks: Iterable[Tick], out: _Out, summary: ReplaySummary, bar: Any, stop: asyncio.Event | None) -> None:
    add = out.add
    inflight: asyncio.Task | None = None
    chunk = PIPELINE_ENTRIES * out.batch_max
    since = 0
    try:
        for t in ticks:
            add(t)
            since += 1
            if since >= chunk:
                # Build the next round trip while the previous one is in flight; never two at
                # once (two pipelines may use two connections and reorder a stream).
                if inflight is not None:
                    await inflight
                inflight = asyncio.ensure_future(out.send(out.take()))
                await asyncio.sleep(0)  # let the send go out before reading on
                if bar is not None:
                    bar.update(since)
                since = 0
                if stop is not None and stop.is_set():
                    summary.interrupted = True
                    break
    finally:
        if inflight is not None:
            await inflight
    out.seal_all()
    while out.full:
        await out.send(out.take(PIPELINE_ENTRIES))
    if bar is not None and since:
        bar.update(since)


async def _lockstep(
    ticks: Iterable[Tick], out: _Out, summary: ReplaySummary, bar: Any, stop: asyncio.Event | None,
    drain_timeout_s: float,
) -> None:
    names = pipeline_streams(out.shards)
    since = 0

    async def step() -> None:
        out.seal_all()
        await out.send(out.take())
        if not await wait_drained(out.redis, names, drain_timeout_s):
            raise TimeoutError(f"lockstep: the pipeline did not drain within {drain_timeout_s}s")

    for t in ticks:
        out.add(t)
        since += 1
        if since >= out.batch_max:
            await step()
            if bar is not None:
                bar.update(since)
            since = 0
            if stop is not None and stop.is_set():
                summary.interrupted = True
                break
    if since:
        await step()
        if bar is not None:
            bar.update(since)


async def _paced(
    ticks: Iterable[Tick], out: _Out, summary: ReplaySummary, bar: Any, speed: float, stop: asyncio.Event | None
) -> None:
    add = out.add
    clock = time.perf_counter
    inv = 1.0 / (speed * 1e9)
    unsent = 0
    ts0 = None
    start = now = due_first = 0.0  # due_first: due time of the oldest unsent tick
    max_lag = 0.0

    async def flush() -> None:
        nonlocal unsent, max_lag, now
        lag = clock() - due_first
        max_lag = max(max_lag, lag)
        out.seal_all()
        await out.send(out.take())
        if bar is not None:
            bar.update(unsent)
        unsent = 0
        now = clock()

    for t in ticks:
        ts = t.ts_event
        if ts0 is None:
            ts0 = ts
            start = now = clock()
        due = start + (ts - ts0) * inv  # from the start: no drift from accumulated sleeps
        if due > now:
            now = clock()
            if due > now:
                # Everything due so far goes out together, one entry per shard (natural batching).
                if unsent:
                    await flush()
                wait = due - now
                if wait > _SLEEP_MIN_S:
                    if stop is None:
                        await asyncio.sleep(wait)
                    else:
                        try:
                            await asyncio.wait_for(stop.wait(), wait)
                        except TimeoutError:
                            pass
                    now = clock()
                if stop is not None and stop.is_set():
                    summary.interrupted = True
                    break
        if not unsent:
            due_first = due
        add(t)
        unsent += 1
        if len(out.full) >= PIPELINE_ENTRIES:
            await flush()  # far behind schedule: do not let the backlog grow without bound
    if unsent:
        await flush()
    summary.max_lag_ms = max_lag * 1000.0
