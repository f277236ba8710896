"""The bus: Redis Streams with consumer groups, natural batching and effectively-once stages.

A consumer reads up to ``read_count`` entries per ``XREADGROUP`` (short block), the
service handles them, and ``commit()`` publishes the outputs, increments the stage's
counters, dead-letters bad entries and acks the inputs in one ``MULTI/EXEC``: either
all of it happens or none does, so a crash between handling and commit only means the
inputs are delivered again (at-least-once) and deterministic ids make the re-run
produce the same outputs (effectively-once per stage).

Every stream entry has one field ``d``: the MessagePack bytes of one wire message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import hiredis
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import (
    ClusterDownError,
    ExecAbortError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import streams
from common.messages import check, decode_as, encode
from common.resp import RecordingPipe, Refused, RespConnection, is_refusal, reply_error

__all__ = [
    "Entry", "Outputs", "Consumer", "Publisher", "connect", "BusUnavailable", "DATA_FIELD", "Refused",
    "cluster_node", "group_backlog", "pipeline_streams", "refused", "unavailable", "wait_drained",
]

log = logging.getLogger(__name__)

DATA_FIELD = b"d"
DLQ_MAXLEN = 100_000

# A command Redis refused for now, applying none of it (common.resp.REFUSAL_CODES): from the lean connection
# ``Refused``; from redis-py the classes it maps those codes to (LOADING is its BusyLoadingError, a ConnectionError).
_REFUSED = (Refused, OutOfMemoryError, ReadOnlyError, TryAgainError, ClusterDownError)

# Errors that mean "Redis is not there right now", or is there and refuses writes for now (full, read-only
# replica, failing to persist): the outermost loop backs off and retries.
BusUnavailable = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, *_REFUSED)


def cluster_node(info: dict[str, Any]) -> str | None:
    """Why a Redis whose ``INFO cluster`` is ``info`` cannot be the bus (a Redis Cluster node), else None.
    Each stage commits across several hash slots in one MULTI/EXEC, which a cluster refuses (docs/scaling.md)."""
    if str(info.get("cluster_enabled", "0")) not in ("1", "True", "true"):
        return None
    return ("invalid setting REDIS_URL: it points at a Redis Cluster node (cluster_enabled:1); AITrader runs on a "
            "standalone Redis only: each stage commits across several hash slots in one transaction, which a "
            "cluster refuses (docs/scaling.md, Redis Cluster)")


def refused(e: BaseException) -> bool:
    """Redis refused the command (of a transaction: the whole of it) for now and applied none of it, so sending
    the same again later is safe. Also true for the codes redis-py has no class for (MISCONF, BUSY, NOREPLICAS)."""
    if isinstance(e, _REFUSED):
        return True
    if isinstance(e, ExecAbortError):  # redis-py drops the code from the text
        return is_refusal(f"EXECABORT {e}")
    return isinstance(e, ResponseError) and is_refusal(str(e))


def unavailable(e: BaseException) -> bool:
    """Redis is not there right now, or is there and refuses writes for now: back off and try again."""
    return isinstance(e, BusUnavailable) or refused(e)


def connect(url: str, **kw: Any) -> aioredis.Redis:
    """An asyncio Redis client returning bytes (no response decoding on the hot path)."""
    kw.setdefault("health_check_interval", 30)
    if not url.startswith("unix:"):  # a unix socket has no TCP keepalive
        kw.setdefault("socket_keepalive", True)
    return aioredis.Redis.from_url(url, decode_responses=False, **kw)


@dataclass(slots=True)
class Entry:
    """One stream entry as delivered to a consumer."""

    stream: str
    id: bytes
    msg: Any  # the decoded wire message
    raw: bytes  # the payload as received (kept for dead-lettering)
    deliveries: int = 1


@dataclass(slots=True)
class _Dead:
    stream: str
    id: bytes
    raw: bytes
    reason: str
    deliveries: int


@dataclass
class Outputs:
    """What one batch produces; applied atomically with the acks by ``Consumer.commit``."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    dead: list[_Dead] = field(default_factory=list)
    acks: dict[str, list[bytes]] = field(default_factory=dict)
    extra: list[Callable[[Any], None]] = field(default_factory=list)  # pipeline ops (e.g. HSET)
    failed: list[tuple[str, bytes]] = field(default_factory=list)  # entries whose handler raised: one strike each

    def publish(self, stream: str, msg: msgspec.Struct | bytes) -> None:
        self.messages.append((stream, msg if isinstance(msg, bytes) else encode(msg)))

    def incr(self, counter: str, n: int = 1) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + n

    def dead_letter(self, entry: Entry, reason: str) -> None:
        self.dead.append(_Dead(entry.stream, entry.id, entry.raw, reason, entry.deliveries))

    def ack(self, entry: Entry) -> None:
        self.acks.setdefault(entry.stream, []).append(entry.id)

    def fail(self, entry: Entry) -> None:
        """The handler raised on ``entry``: it stays pending, to be retried, with one more strike."""
        self.failed.append((entry.stream, entry.id))

    def redis_op(self, op: Callable[[Any], None]) -> None:
        """Queue an extra command (``op(pipe)``) inside the commit transaction."""
        self.extra.append(op)

    def mark(self) -> tuple[int, int, int]:
        return len(self.messages), len(self.dead), len(self.extra)

    def rollback(self, mark: tuple[int, int, int], counters: dict[str, int]) -> None:
        """Forget what a failed handler emitted after ``mark`` (its entry stays pending)."""
        del self.messages[mark[0] :]
        del self.dead[mark[1] :]
        del self.extra[mark[2] :]
        self.counters = counters

    def __bool__(self) -> bool:
        return bool(self.messages or self.counters or self.dead or self.acks or self.extra or self.failed)


class Publisher:
    """Pipelined XADD of many messages in one round trip (no transaction needed).

    Uses the lean hot-path connection (``common.resp``) unless ``fast_path`` is false.

    ``wait_refused``: while Redis refuses the writes for now (full under ``noeviction``, a read-only replica,
    failing to persist), wait and send them again, so a feed holds back rather than drops or exits. Each round
    trip is then one MULTI/EXEC: a refusal applies none of it, so the same messages go again, once each and in
    order (in a bare pipeline a refused XADD may be followed by a stored one when memory frees in between, which
    could not be resent without reordering).
    """

    def __init__(self, redis: aioredis.Redis, maxlen: int, fast_path: bool = True, wait_refused: bool = False) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.fast_path = fast_path
        self.wait_refused = wait_refused
        self.refused = 0  # messages refused and sent again
        self._fast: RespConnection | None = None

    async def publish(self, items: Iterable[tuple[str, bytes]]) -> None:
        cmds = [("XADD", stream, "MAXLEN", "~", self.maxlen, "*", DATA_FIELD, data) for stream, data in items]
        if not cmds:
            return
        if not self.wait_refused:
            await self._send(cmds, False)
            return
        delay, since = 0.05, 0.0
        while True:
            try:
                await self._send(cmds, True)
                return
            except Exception as e:
                if not refused(e):
                    raise
                self.refused += len(cmds)
                now = time.monotonic()
                if now - since >= 10:
                    since = now
                    log.warning("redis refuses writes (%s); holding %d messages and sending them again until it "
                                "accepts them", e, len(cmds))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _send(self, cmds: list[tuple], transaction: bool) -> None:
        if self.fast_path:
            if self._fast is None or self._fast.closed:
                self._fast = await RespConnection.open(self.redis.connection_pool.connection_kwargs)
            if transaction:
                await self._fast.transaction(cmds)
            else:
                await self._fast.pipeline(cmds)
            return
        pipe = self.redis.pipeline(transaction=transaction)
        for cmd in cmds:
            pipe.execute_command(*cmd)
        await pipe.execute()

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
            self._fast = None


def _forget(fut: asyncio.Future) -> None:
    """Retrieve a dropped future's exception so asyncio does not log it as never retrieved."""
    if not fut.cancelled():
        fut.exception()


class Consumer:
    """A member of one consumer group over one or more streams.

    ``types`` maps each stream to the message type expected on it; anything that does
    not decode as that type, or fails its semantic check, is dead-lettered with a reason.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        group: str,
        consumer: str,
        types: dict[str, type],
        *,
        stats_key: str,
        count: int = 512,
        block_ms: int = 5,
        maxlen: int = 1_000_000,
        max_deliveries: int = 5,
        claim_idle_ms: int = 30_000,
        retry_idle_ms: int = 1_000,
        start_id: str = "0",
        fast_path: bool = True,
    ) -> None:
        self.redis = redis
        self.fast_path = fast_path
        self._fast: RespConnection | None = None
        self.group = group
        self.consumer = consumer
        self.types = types
        self.stats_key = stats_key
        self.count = count
        self.block_ms = block_ms
        self.maxlen = maxlen
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.retry_idle_ms = retry_idle_ms
        self.start_id = start_id
        self._stream_names = list(types)
        # Lazy streams (see ``set_lazy``): read at most every ``_lazy_interval`` seconds.
        self._lazy: list[str] = []
        self._eager: list[str] = self._stream_names
        self._lazy_interval = 0.0
        self._lazy_due = 0.0
        self.urgent = False  # set by the service: read the lazy streams on every cycle for now
        self._backlog: list[Entry] = []  # own pending entries to re-deliver first
        self._catch_up = False  # the backlog came from the eager streams only: read the lazy ones first
        # A blocking XREADGROUP written right after the last commit (fast path): (reply future, streams).
        self._pending_read: tuple[asyncio.Future, list[str]] | None = None
        self._last_retry_scan = 0.0
        self._last_claim_scan = 0.0
        # Poison detection by strikes, not by Redis' delivery count (which a restart raises for every entry pending
        # then, handled or not): entries delivered before (re-read after a restart, claimed from a dead consumer,
        # failed in the handler) and not acked yet are "suspects", each with its strikes: the times its handler
        # raised (``Outputs.fail``, counted by the commit) or a consumer died while handling it. A batch with
        # suspects is marked in Redis before it is handed out (``_guard``) and unmarked by its commit; a marker
        # found at the next start means the consumer died handling them: one strike each. A suspect with a strike
        # is handed out alone, and at ``max_deliveries`` strikes it is dead-lettered (``split``).
        self._suspects: dict[tuple[str, bytes], int] = {}
        self._inflight: list[tuple[str, bytes]] = []  # the suspects of the batch handed out last (marked)
        self._me = consumer.encode()
        self._inflight_key = streams.inflight_key(group)
        self._strikes_key = streams.strikes_key(group)
        # What committed batches did, for the service's /metrics (common.metrics): per-process totals.
        self.acked: dict[str, int] = {}
        self.dead_by_stream: dict[str, int] = {}
        self.committed: dict[str, int] = {}
        self._started = False
        # Times Redis was found to have lost this consumer's groups after start (a flush, or a
        # restart without persistence): the service compares it to react (see Service.loop).
        self.resets = 0

    # -- set-up -------------------------------------------------------------------------
    async def ensure_groups(self) -> int:
        """Create the missing groups; returns how many were missing."""
        created = 0
        for stream in self.types:
            try:
                await self.redis.xgroup_create(stream, self.group, id=self.start_id, mkstream=True)
                created += 1
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
        if created and self._started:
            self.resets += 1
        return created

    async def start(self, recover: bool = True) -> None:
        """Create groups, then (``recover``) queue this consumer's own pending entries and claim abandoned ones."""
        await self.ensure_groups()
        self._started = True
        await self._strike(None)  # a marker left by this consumer's previous run: it died handling those
        if recover:
            await self._recover_pending()

    def forget_backlog(self) -> None:
        """Drop what was delivered to this consumer and not handled yet, unacked: it stays pending in the group,
        for whoever takes the group over (``take_over``)."""
        self._backlog = []
        self._catch_up = False
        self._suspects.clear()  # whoever takes the entries over adopts them, with their strikes
        self._inflight = []
        if self._pending_read is not None:
            self._pending_read[0].add_done_callback(_forget)
            self._pending_read = None

    async def take_over(self) -> int:
        """Claim every entry pending in the group, whoever it was delivered to, oldest first per stream, to be
        handled before anything new. Only for a consumer that knows no other member is handling them (it holds
        the group's lease); returns how many were claimed."""
        self.forget_backlog()
        self._backlog = await self._claim_abandoned(min_idle_ms=0)
        self._last_claim_scan = self._last_retry_scan = time.monotonic()
        return len(self._backlog)

    async def _recover_pending(self) -> None:
        own: list[Entry] = []
        for stream in self.types:
            # Own pending entries (a previous run of this consumer that stopped before acking).
            start = b"0"
            while True:
                resp = await self.redis.xreadgroup(
                    self.group, self.consumer, {stream: start}, count=self.count
                )
                items = resp[0][1] if resp else []
                if not items:
                    break
                ids = [i for i, _ in items]
                counts = await self._delivery_counts(stream, ids)
                own.extend(self._to_entries(stream, items, counts))
                start = items[-1][0]
                if len(items) < self.count:
                    break
        await self._adopt(own)
        self._backlog.extend(own)
        self._backlog.extend(await self._claim_abandoned())
        self._last_claim_scan = time.monotonic()

    async def _claim_abandoned(self, held: set[bytes] = frozenset(), min_idle_ms: int | None = None) -> list[Entry]:
        """Entries other consumers left pending longer than ``claim_idle_ms`` (they died), or ``min_idle_ms``;
        ``held`` as in ``_retry_failed`` (claimed along with the rest, they are ours already: not returned twice)."""
        out: list[Entry] = []
        idle = self.claim_idle_ms if min_idle_ms is None else min_idle_ms
        if min_idle_ms is None and self.claim_idle_ms <= 0:
            return out
        for stream in self.types:
            cursor = "0-0"
            while True:
                res = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, idle, cursor, count=self.count
                )
                cursor, items = res[0], [it for it in res[1] if it and it[1] is not None and it[0] not in held]
                if items:
                    ids = [i for i, _ in items]
                    counts = await self._delivery_counts(stream, ids)
                    out.extend(self._to_entries(stream, items, counts))
                if cursor in (b"0-0", "0-0"):
                    break
        await self._adopt(out, others=True)
        return out

    # -- poison detection (see __init__) ----------------------------------------------------
    async def _adopt(self, entries: list[Entry], others: bool = False) -> None:
        """Note ``entries`` (delivered before, not acked) as suspects with their strikes; ``others``: they were
        claimed from other consumers, whose markers naming them are struck first (those consumers died)."""
        if not entries:
            return
        fields = [_field(e.stream, e.id) for e in entries]
        if others:
            await self._strike(set(fields))
        strikes = await self.redis.hmget(self._strikes_key, fields)
        for e, n in zip(entries, strikes):
            self._suspects[(e.stream, e.id)] = int(n or 0)

    async def _strike(self, claimed: set[bytes] | None) -> None:
        """One strike for each entry a dead consumer's marker names: this consumer's own marker (``claimed`` is
        None: at start, from its previous run), or other consumers' markers, for the ``claimed`` entries only.
        The markers struck are deleted, so no death is counted twice."""
        if claimed is None:
            mine = await self.redis.hget(self._inflight_key, self._me)
            markers = {self._me: mine} if mine else {}
        else:
            markers = {c: m for c, m in (await self.redis.hgetall(self._inflight_key)).items() if c != self._me}
        hits: dict[bytes, list[bytes]] = {}
        for who, marker in markers.items():
            named = [f for f in marker.split(b"\n") if f and (claimed is None or f in claimed)]
            if named:
                hits[who] = named
        if not hits:
            return
        pipe = self.redis.pipeline(transaction=True)
        for who, named in hits.items():
            for f in named:
                pipe.hincrby(self._strikes_key, f, 1)
            pipe.hdel(self._inflight_key, who)
        await pipe.execute()
        log.warning("%s: consumer(s) %s died while handling %d entries: one strike each (dead-lettered at %d)",
                    self.group, ", ".join(w.decode(errors="replace") for w in hits),
                    sum(map(len, hits.values())), self.max_deliveries)

    async def _guard(self, batch: list[Entry]) -> list[Entry]:
        """Mark the batch's suspects in Redis before it is handed out (the commit unmarks them). A suspect with a
        strike goes alone (the entries before it first, those after it next), so that a poison entry collects
        its strikes by itself and its neighbours none."""
        self._inflight = []
        sus = self._suspects
        if not sus or not batch:
            return batch
        keys = [(e.stream, e.id) for e in batch]
        if not any(k in sus for k in keys):
            return batch
        for i, k in enumerate(keys):
            if sus.get(k, 0) > 0:
                cut = i or 1
                self._backlog[:0] = batch[cut:]
                batch, keys = batch[:cut], keys[:cut]
                break
        marked = [k for k in keys if k in sus]
        try:
            await self.redis.hset(self._inflight_key, self._me, b"\n".join(_field(*k) for k in marked))
        except BaseException:
            self._backlog[:0] = batch  # not handed out: read again when Redis answers
            raise
        self._inflight = marked
        return batch

    async def _delivery_counts(self, stream: str, ids: list[bytes]) -> dict[bytes, int]:
        if not ids:
            return {}
        rows = await self.redis.xpending_range(
            stream, self.group, min=ids[0], max=ids[-1], count=len(ids) + 16, consumername=self.consumer
        )
        return {r["message_id"]: int(r["times_delivered"]) for r in rows}

    # -- reading ------------------------------------------------------------------------
    def set_lazy(self, lazy: Iterable[str], interval_ms: float) -> None:
        """Read the streams in ``lazy`` at most every ``interval_ms``; the others at once.

        For a consumer that needs one input immediately and another only eventually (the
        gateway: intents now, market data for marks within milliseconds): between lazy
        reads it blocks on the eager streams alone, so a quiet eager stream costs no CPU and
        a busy lazy one is read in a few large batches instead of many small ones. Whenever
        an eager read returns entries, the lazy streams are read at once (non-blocking) and
        their entries come first in the batch: everything published before an eager entry
        is handled before it, as without laziness. ``urgent = True`` suspends the interval.
        """
        lazy = set(lazy)
        self._lazy = [s for s in self._stream_names if s in lazy] if interval_ms > 0 else []
        self._eager = [s for s in self._stream_names if s not in self._lazy]
        self._lazy_interval = interval_ms / 1000

    def _plan_read(self) -> tuple[list[str], int]:
        """(streams to read now, block ms). Reading the lazy streams restarts their interval."""
        if not self._lazy:
            return self._stream_names, self.block_ms
        now = time.monotonic()
        if self.urgent or now >= self._lazy_due or not self._eager:
            self._lazy_due = now + self._lazy_interval
            return self._stream_names, self.block_ms
        return self._eager, max(1, min(self.block_ms, math.ceil((self._lazy_due - now) * 1000)))

    def _read_command(self, names: list[str], block: int | None) -> tuple:
        blocking = ("BLOCK", block) if block is not None else ()
        return ("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count, *blocking,
                "STREAMS", *names, *([">"] * len(names)))

    async def _xreadgroup(self, names: list[str], block: int | None) -> list[Entry]:
        if self.fast_path:
            fast = await self._fast_conn()
            return self._raw_entries(await fast.call(*self._read_command(names, block)))
        resp = await self.redis.xreadgroup(
            self.group, self.consumer, {s: ">" for s in names}, count=self.count, block=block
        )
        batch: list[Entry] = []
        for stream, items in resp or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            batch.extend(self._to_entries(name, items))
        return batch

    async def _with_lazy(self, eager_batch: list[Entry]) -> list[Entry]:
        """``eager_batch`` came from the eager streams alone: put the lazy streams' news first."""
        self._lazy_due = time.monotonic() + self._lazy_interval
        return await self._xreadgroup(self._lazy, None) + eager_batch

    def _to_entries(self, stream: str, items: list, counts: dict[bytes, int] | None = None) -> list[Entry]:
        typ = self.types[stream]
        out: list[Entry] = []
        for eid, fields in items:
            raw = fields.get(DATA_FIELD) if fields else None
            deliveries = counts.get(eid, 1) if counts else 1
            if raw is None:
                out.append(Entry(stream, eid, _Undecodable("missing field 'd'"), _raw_fields(fields), deliveries))
                continue
            try:
                msg = decode_as(raw, typ)
            except msgspec.DecodeError as e:
                out.append(Entry(stream, eid, _Undecodable(f"decode: {e}"), raw, deliveries))
                continue
            reason = check(msg)
            if reason is not None:
                out.append(Entry(stream, eid, _Undecodable(f"invalid: {reason}"), raw, deliveries))
                continue
            out.append(Entry(stream, eid, msg, raw, deliveries))
        return out

    async def read(self) -> list[Entry]:
        """The next batch: backlog first, then new entries (blocks at most ``block_ms``)."""
        try:
            if self._catch_up:
                # The backlog was prefetched from the eager streams alone (see set_lazy).
                self._catch_up = False
                self._backlog = await self._with_lazy(self._backlog)
            if self._backlog:
                batch, self._backlog = self._backlog[: self.count], self._backlog[self.count :]
                return await self._guard(batch)
            return await self._guard(await self._read())
        except ResponseError as e:
            # NOGROUP: the group is gone; UNBLOCKED: the stream was deleted under a blocked read.
            if "NOGROUP" not in str(e) and "UNBLOCKED" not in str(e):
                raise
            # Redis lost its state (flush / restart without persistence): recreate the groups,
            # pausing briefly so a persistent fault cannot turn into a hot loop.
            log.warning("consumer group %s missing; recreating", self.group)
            self._suspects.clear()  # their entries are gone with the groups
            self._inflight = []
            await self.ensure_groups()
            await asyncio.sleep(0.1)
            return []

    async def _read(self) -> list[Entry]:
        prefetched = self._pending_read is not None
        if prefetched:
            # The last commit's read-ahead first. What it delivered is pending to this consumer and,
            # after a stall (a slow database, Redis away in the stage's after-commit work), idle long
            # enough for the scans below: they must not hand the same entries out a second time.
            fut, names = self._pending_read
            self._pending_read = None
            reply = await fut
            if isinstance(reply, hiredis.ReplyError):
                raise reply_error(reply)
            self._backlog = await self._complete(self._raw_entries(reply), names)  # read() left it empty
        now = time.monotonic()
        retry_due = now - self._last_retry_scan >= self.retry_idle_ms / 1000
        claim_due = self.claim_idle_ms > 0 and now - self._last_claim_scan >= self.claim_idle_ms / 2000
        if retry_due or claim_due:
            held = {e.id for e in self._backlog}
            if retry_due:
                self._last_retry_scan = now
                retried = await self._retry_failed(held)
                if retried:
                    return retried
            if claim_due:
                # While running, too: a consumer that died (another instance, or this service's
                # previous run under another name) must not leave its entries pending forever.
                self._last_claim_scan = now
                claimed = await self._claim_abandoned(held)
                if claimed:
                    return claimed
        if prefetched:
            batch, self._backlog = self._backlog[: self.count], self._backlog[self.count :]
            return batch
        names, block = self._plan_read()
        return await self._complete(await self._xreadgroup(names, block), names)

    async def _complete(self, batch: list[Entry], names: list[str]) -> list[Entry]:
        """A read of the eager streams alone that returned entries: the lazy streams' news first."""
        if batch and names is self._eager and self._lazy:
            return await self._with_lazy(batch)
        return batch

    def _raw_entries(self, resp: Any) -> list[Entry]:
        """Entries from a raw (hiredis) XREADGROUP reply: [[stream, [[id, [f, v, ...]], ...]], ...]."""
        if not resp:
            return []
        batch: list[Entry] = []
        for stream, items in resp:
            rows = [(eid, dict(zip(f[::2], f[1::2])) if f else None) for eid, f in items]
            batch.extend(self._to_entries(stream.decode(), rows))
        return batch

    async def _fast_conn(self) -> RespConnection:
        if self._fast is None or self._fast.closed:
            self._fast = await RespConnection.open(self.redis.connection_pool.connection_kwargs)
        return self._fast

    def close(self) -> None:
        if self._pending_read is not None:
            self._pending_read[0].add_done_callback(_forget)
            self._pending_read = None
        if self._fast is not None:
            self._fast.close()
            self._fast = None

    async def _retry_failed(self, held: set[bytes] = frozenset()) -> list[Entry]:
        """Re-deliver own entries left pending by a failed handler (idle ≥ retry_idle_ms); ``held``:
        ids already delivered to this process and not yet handled (a read-ahead), never re-delivered."""
        out: list[Entry] = []
        for stream in self.types:
            rows = await self.redis.xpending_range(
                stream, self.group, min="-", max="+", count=self.count,
                consumername=self.consumer, idle=self.retry_idle_ms,
            )
            rows = [r for r in rows if r["message_id"] not in held]
            if not rows:
                continue
            ids = [r["message_id"] for r in rows]
            counts = {r["message_id"]: int(r["times_delivered"]) + 1 for r in rows}
            items = await self.redis.xclaim(stream, self.group, self.consumer, self.retry_idle_ms, ids)
            items = [it for it in items if it and it[1] is not None]
            out.extend(self._to_entries(stream, items, counts))
            # Entries trimmed away while pending: nothing left to process, just ack them (and forget their strikes).
            gone = set(ids) - {i for i, _ in items}
            if gone:
                await self.redis.xack(stream, self.group, *gone)
                struck = [_field(stream, g) for g in gone if self._suspects.pop((stream, g), None)]
                if struck:
                    await self.redis.hdel(self._strikes_key, *struck)
        return out

    # -- committing ---------------------------------------------------------------------
    def split(self, batch: list[Entry], out: Outputs) -> list[Entry]:
        """Dead-letter undecodable entries and poison ones (a consumer died ``max_deliveries`` times handling
        each); return the rest."""
        good: list[Entry] = []
        sus = self._suspects
        for e in batch:
            if isinstance(e.msg, _Undecodable):
                out.dead_letter(e, e.msg.reason)
                out.ack(e)
            elif sus and sus.get((e.stream, e.id), 0) >= self.max_deliveries:
                out.dead_letter(e, f"poison: {sus[(e.stream, e.id)]} strikes, the last a death of the consumer "
                                   f"while handling it")
                out.ack(e)
            else:
                good.append(e)
        return good

    def strikes(self, entry: Entry) -> int:
        """How many times ``entry``'s handler raised or a consumer died handling it, so far."""
        return self._suspects.get((entry.stream, entry.id), 0) if self._suspects else 0

    async def commit(self, out: Outputs, prefetch: bool = False) -> None:
        """Publish outputs, count, dead-letter and ack in one MULTI/EXEC.

        With ``prefetch`` the next read is written in the same round trip: on the lean
        connection, a blocking XREADGROUP right after the EXEC (one write, one Redis wake-up;
        it returns at once under load and blocks like ``read()`` otherwise; the next
        ``read()`` takes its reply); through redis-py, a non-blocking XREADGROUP inside the
        transaction. Either way a stage under load pays one round trip per batch, not two.
        """
        if not out:
            if self._inflight:  # nothing to commit (every handler failed): the batch was handled, unmark it
                await self.redis.hdel(self._inflight_key, self._me)
                self._inflight = []
            return
        prefetch = prefetch and bool(out.acks) and not self._backlog and self._pending_read is None
        if self.fast_path:
            conn = await self._fast_conn()
            then = None
            if prefetch:
                names, block = self._plan_read()
                then = self._read_command(names, block)
            futs, read_fut = conn.send_transaction(self._commands(out, None), then)
            if read_fut is not None:
                self._pending_read = (read_fut, names)
            await conn.transaction_replies(futs)
            self._done(out)
            return
        names = self._plan_read()[0] if prefetch else self._stream_names
        cmds = self._commands(out, names if prefetch else None)
        pipe = self.redis.pipeline(transaction=True)
        for cmd in cmds:
            pipe.execute_command(*cmd)
        results = await pipe.execute()
        fetched = []
        for stream, items in (results[-1] or []) if prefetch else []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            fetched.extend(self._to_entries(name, items))
        self._done(out)
        self._backlog.extend(fetched)
        self._catch_up = bool(fetched) and names is self._eager and bool(self._lazy)

    def _settled(self, out: Outputs) -> list[tuple[str, bytes]]:
        """The suspects of the batch handed out last that ``out`` acks (handled, or dead-lettered)."""
        if not self._inflight:
            return []
        acked = {(s, i) for s, ids in out.acks.items() for i in ids}
        return [k for k in self._inflight if k in acked]

    def _done(self, out: Outputs) -> None:
        """Add a durable commit to the process's totals (a few dict updates per batch)."""
        for d in out.dead:
            self.dead_by_stream[d.stream] = self.dead_by_stream.get(d.stream, 0) + 1
        for name, n in out.counters.items():
            self.committed[name] = self.committed.get(name, 0) + n
        for stream, ids in out.acks.items():
            self.acked[stream] = self.acked.get(stream, 0) + len(ids)
        if self._inflight:  # (the usual batch has none: no call, no allocation)
            for k in self._settled(out):
                self._suspects.pop(k, None)
            self._inflight = []
        for k in out.failed:
            self._suspects[k] = self._suspects.get(k, 0) + 1

    def _commands(self, out: Outputs, prefetch: list[str] | None) -> list[tuple]:
        """The commit's commands, in order: outputs, dead letters, counters, extras, acks, read-ahead."""
        maxlen = self.maxlen
        cmds: list[tuple] = [
            ("XADD", stream, "MAXLEN", "~", maxlen, "*", DATA_FIELD, data) for stream, data in out.messages
        ]
        if out.dead:
            now = time.time_ns()
            for d in out.dead:
                cmds.append((
                    "XADD", streams.dlq_stream(d.stream), "MAXLEN", "~", DLQ_MAXLEN, "*",
                    b"stream", d.stream, b"id", d.id, b"group", self.group, b"reason", d.reason[:500],
                    b"data", d.raw[:65536], b"deliveries", d.deliveries, b"ts", now,
                ))
                cmds.append(("HINCRBY", streams.DLQ_COUNTS, d.stream, 1))
            out.counters["dead_letters"] = out.counters.get("dead_letters", 0) + len(out.dead)
        for name, n in out.counters.items():
            cmds.append(("HINCRBY", self.stats_key, name, n))
        if out.extra:
            rec = RecordingPipe()
            for op in out.extra:
                op(rec)
            cmds.extend(rec.commands)
        for stream, eid in out.failed:
            cmds.append(("HINCRBY", self._strikes_key, _field(stream, eid), 1))
        if self._inflight:  # the batch had suspects: unmark it, and forget the strikes of those acked
            cmds.append(("HDEL", self._inflight_key, self._me))
            struck = [_field(*k) for k in self._settled(out) if self._suspects.get(k)]
            if struck:
                cmds.append(("HDEL", self._strikes_key, *struck))
        for stream, ids in out.acks.items():
            cmds.append(("XACK", stream, self.group, *ids))
        if prefetch:
            cmds.append(self._read_command(prefetch, None))
        return cmds

    @property
    def has_backlog(self) -> bool:
        """Entries delivered to this consumer (or on their way) that ``read()`` has not returned."""
        return bool(self._backlog) or self._pending_read is not None


class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _field(stream: str, eid: bytes) -> bytes:
    """An entry's name in the inflight markers and the strikes hash."""
    return stream.encode() + b"\x00" + (eid if isinstance(eid, bytes) else str(eid).encode())


def _raw_fields(fields: dict | None) -> bytes:
    if not fields:
        return b""
    return msgspec.msgpack.encode({bytes(k): bytes(v) for k, v in fields.items()})


async def group_backlog(redis: aioredis.Redis, stream_names: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Per ``stream/group``: entries not yet delivered (``lag``) and delivered but unacked (``pending``).

    With ``stream_names`` the snapshot is taken in one MULTI/EXEC, in the order given: list
    streams upstream first so that work moving downstream between two reads is never missed
    (a full Redis refuses a MULTI even of reads: then they are read one after the other).
    Without, every stream (but dead-letter, heartbeat and ack streams) is scanned.
    """
    if stream_names is None:
        stream_names = [
            k.decode() async for k in redis.scan_iter(match="*", _type="stream")
            if not k.startswith((b"dlq:", b"sys:", b"ctl:acks", b"bench:"))
        ]
    results: list[Any] = []
    for transaction in (True, False):
        pipe = redis.pipeline(transaction=transaction)
        for s in stream_names:
            pipe.xinfo_groups(s)
            pipe.xinfo_stream(s)
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as e:  # a transaction refused as a whole
            if not (transaction and refused(e)):
                raise
            results = [e]
        # A full Redis refuses every command queued in a MULTI, reads too: read them one by one instead (the
        # snapshot is then not atomic: work moving downstream between two reads may be missed).
        errors = [x for x in results if isinstance(x, Exception)]
        if not (transaction and errors and all(refused(x) for x in errors)):
            break
    out: dict[str, dict[str, int]] = {}
    for i, stream in enumerate(stream_names):
        groups, info = results[2 * i], results[2 * i + 1]
        if isinstance(groups, Exception) or isinstance(info, Exception) or not groups:
            continue  # no such stream yet
        last = info.get("last-generated-id")
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            lag = g.get("lag")
            if lag is None:  # Redis < 7 (or unknown): derive from the last delivered id
                lag = 0 if g["last-delivered-id"] == last else 1
            out[f"{stream}/{name}"] = {"lag": int(lag), "pending": int(g["pending"])}
    return out


def pipeline_streams(shards: int) -> list[str]:
    """The pipeline's streams, upstream first (for ``group_backlog``)."""
    return [streams.ticks_stream(i) for i in range(shards)] + [
        streams.SIGNALS, streams.INTENTS, streams.EXEC_EVENTS, streams.CONTROL,
    ]


async def wait_drained(redis: aioredis.Redis, stream_names: list[str] | None, timeout_s: float,
                       poll_s: float = 0.002) -> bool:
    """Wait until every consumer group on ``stream_names`` has nothing undelivered or pending."""
    deadline = time.monotonic() + timeout_s
    while True:
        backlog = await group_backlog(redis, stream_names)
        if not any(v["lag"] or v["pending"] for v in backlog.values()):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll_s)
