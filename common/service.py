"""The async service shape every bus consumer shares.

Named tasks, one signal handler, a try/except around each message (never around the
loop), a health key with a TTL, heartbeats on ``sys:heartbeats``, latency histograms
saved to Redis, and a graceful stop: on SIGTERM the current batch is finished and
committed (outputs published, inputs acked) before the process exits 0.

Only ``run_service`` (the outermost loop) decides whether to retry or stop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from common import streams
from common.bus import (
    BusUnavailable,
    Consumer,
    Entry,
    Outputs,
    cluster_node,
    connect,
    group_backlog,
    refused,
    unavailable,
)
from common.config import CommonSettings, ConfigError, env_name
from common.latency import LatencyHistogram
from common.messages import Heartbeat, encode
from common.metrics import MetricsServer, Snapshot, latency_summary

__all__ = ["Service", "check_health", "install_uvloop", "main_entry", "setup_logging"]

log = logging.getLogger(__name__)


def setup_logging(level: str = "INFO", log_json: bool = False) -> None:
    """Every record to stderr, as text or (``AITRADER_LOG_JSON``) one JSON object per line."""
    from common.logs import configure_logging

    configure_logging(level, log_json)


def install_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass


class Fenced(Exception):
    """A handled batch must not be committed: another instance may be handling the same entries now."""


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    """Wait until ``a`` or ``b`` is set."""
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class Service:
    """Base class of a bus-consuming service. Subclasses set ``name`` and implement ``handle``."""

    name = "service"

    def __init__(self, common: CommonSettings) -> None:
        self.common = common
        # Stable across restarts: a restarted service is the same consumer and re-reads the
        # entries its previous run left pending before anything new (see common.bus).
        self.instance = common.instance or socket.gethostname()
        self.redis: aioredis.Redis | None = None
        self.consumer: Consumer | None = None
        self.stopping = asyncio.Event()
        self.started_at = time.time_ns()
        self.status = "starting"
        self.detail = ""
        self._refused_logged = 0.0  # when a refused commit was last logged (monotonic)
        # Set while this instance may read its inputs. A standby (pattern engine, AITRADER_PE_STANDBY) clears it
        # until it holds its group's lease; ``fenced`` then says when a handled batch must not be committed.
        self.active = asyncio.Event()
        self.active.set()
        self.standby = False
        self.counters: dict[str, int] = {}
        self.latency: dict[str, LatencyHistogram] = {}
        self._tasks: list[asyncio.Task] = []
        # Held around each batch (process, commit, after_commit) and each idle(): a task of the
        # service that changes the same state outside the loop takes it too, so they never interleave.
        self.batch_lock = asyncio.Lock()
        self.last_heartbeat_ns = 0
        # /metrics (common.metrics): off until a subclass calls serve_metrics_from with its settings.
        self.metrics_port = 0
        self.metrics_key = ""

    # -- to implement -------------------------------------------------------------------
    def input_types(self) -> dict[str, type]:
        """Streams this service consumes and the message type on each."""
        return {}

    async def setup(self) -> None:
        """Open resources (database, clients). Called once Redis answers."""

    async def handle(self, entry: Entry, out: Outputs) -> None:
        """Handle one decoded entry; emit outputs into ``out``. Raise to leave it pending."""
        raise NotImplementedError

    async def before_batch(self, batch: list[Entry]) -> None:
        """Hook called with the whole (valid) batch before per-entry handling."""

    async def after_commit(self, batch: list[Entry], out: Outputs) -> None:
        """Hook called after the batch's outputs and acks are durable."""

    async def idle(self) -> None:
        """Called when a read returned nothing (timers, expiries)."""

    async def teardown(self) -> None:
        """Close resources. Called once on stop."""

    async def on_bus_reset(self) -> None:
        """Redis lost its state (flush, restart without persistence); the groups are back.

        Services that mirror state into Redis write it again here."""

    def configure_consumer(self, consumer: Consumer) -> None:
        """Adjust the consumer before it starts (e.g. ``Consumer.set_lazy``)."""

    def heartbeat_detail(self) -> str:
        return self.detail

    # -- helpers ------------------------------------------------------------------------
    def hist(self, stage: str) -> LatencyHistogram:
        h = self.latency.get(stage)
        if h is None:
            h = self.latency[stage] = LatencyHistogram()
        return h

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def serve_metrics_from(self, settings: Any) -> None:
        """Serve ``/metrics`` on ``settings.metrics_port`` (0: not at all); a bind error names that setting."""
        self.metrics_port = settings.metrics_port
        self.metrics_key = env_name(type(settings), "metrics_port")

    async def metrics_snapshot(self) -> Snapshot:
        """What ``/metrics`` shows, copied here on the loop (never while a handler writes it)."""
        c = self.consumer
        snap = Snapshot(
            service=self.name, instance=self.instance, status=self.status, started_at_ns=self.started_at,
            last_heartbeat_ns=self.last_heartbeat_ns, counters=dict(self.counters),
            committed=dict(c.committed) if c else {}, acked=dict(c.acked) if c else {},
            dead_letters=dict(c.dead_by_stream) if c else {},
            latency={stage: latency_summary(h) for stage, h in self.latency.items()}, backlog=None,
        )
        if self.redis is not None:
            try:
                groups = await group_backlog(self.redis, list(self.input_types()))
            except BusUnavailable:
                return snap
            suffix = f"/{self.name}"
            snap.backlog = {k.removesuffix(suffix): (v["lag"], v["pending"])
                            for k, v in groups.items() if k.endswith(suffix)}
        return snap

    # -- lifecycle ----------------------------------------------------------------------
    async def _connect(self) -> None:
        self.redis = connect(self.common.redis_url)
        delay = 0.1
        while not self.stopping.is_set():
            try:
                await self.redis.ping()
                why = cluster_node(await self.redis.info("cluster"))
                if why:
                    raise ConfigError(why)
                return
            except BusUnavailable as e:
                log.warning("%s: redis not reachable (%s); retrying in %.1fs", self.name, e, delay)
                await asyncio.wait([asyncio.ensure_future(self.stopping.wait())], timeout=delay)
                delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        await self._connect()
        if self.stopping.is_set():
            return
        await self.setup()
        types = self.input_types()
        if types:
            c = self.common
            self.consumer = Consumer(
                self.redis,
                group=self.name,
                consumer=self.instance,
                types=types,
                stats_key=streams.stats_key(self.name),
                count=c.read_count,
                block_ms=c.block_ms,
                maxlen=c.stream_maxlen,
                max_deliveries=c.max_deliveries,
                claim_idle_ms=c.claim_idle_ms,
                fast_path=c.fast_bus,
            )
            self.configure_consumer(self.consumer)
            # A standby claims nothing until it holds the lease (then ``Consumer.take_over``).
            await self.consumer.start(recover=not self.standby)
        # Start-up objects (imported modules, pydantic models, the MCP client, numba: 100k+) never die;
        # a full collection walks them all (~40-100 ms on these machines), stalling every message behind it.
        # Frozen, they are out of every later collection: measured in docs/benchmarks.md.
        gc.collect()
        gc.freeze()
        self.status = "ok"

    async def process(self, batch: list[Entry]) -> Outputs:
        out = Outputs()
        assert self.consumer is not None
        good = self.consumer.split(batch, out)
        if good:
            await self.before_batch(good)
        for entry in good:
            mark, counters = out.mark(), dict(out.counters)
            try:
                await self.handle(entry, out)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # one bad message must not stop the stream
                out.rollback(mark, counters)
                self.count("handler_errors")
                strikes = self.consumer.strikes(entry) + 1  # this failure included
                log.exception("%s: handling %s %s failed (strike %d of %d, delivery %d): %s", self.name,
                              entry.stream, entry.id, strikes, self.common.max_deliveries, entry.deliveries, e)
                if strikes >= self.common.max_deliveries:
                    out.dead_letter(entry, f"handler failed {strikes}x: {type(e).__name__}: {e}")
                    out.ack(entry)
                else:
                    out.fail(entry)  # pending, retried (alone) after retry_idle_ms, one strike more
                continue
            out.ack(entry)
        return out

    async def loop(self) -> None:
        assert self.consumer is not None
        backoff = 0.05
        resets = self.consumer.resets
        # On stop, entries already delivered to us (prefetched) are still handled and acked.
        while not self.stopping.is_set() or self.consumer.has_backlog:
            if not self.active.is_set():  # a standby: wait for the lease, or the stop
                if self.stopping.is_set():
                    return
                await _either(self.active, self.stopping)
                continue
            if self.fenced():  # the lease may have run out (a stall): read nothing until it is renewed or lost
                if self.stopping.is_set():
                    return
                await asyncio.sleep(0.01)
                continue
            try:
                if self.consumer.resets != resets:
                    resets = self.consumer.resets
                    log.warning("%s: redis lost its state; restoring what this service mirrors there", self.name)
                    self.count("bus_resets")
                    await self.on_bus_reset()
                batch = await self.consumer.read()
                if self.detail.startswith("redis unavailable"):
                    self.status, self.detail = "ok", ""  # Redis answers again
                if not batch:
                    async with self.batch_lock:
                        await self.idle()
                    continue
                async with self.batch_lock:
                    out = await self.process(batch)
                    committed = await self._try_commit(out, 1)
                    if committed:
                        await self.after_commit(batch, out)
                if not committed:
                    await self._commit_refused(batch, out)
                backoff = 0.05
            except Fenced as e:
                # Handled, not committed: the batch stays pending in the group, for the lease's holder.
                self.count("batches_fenced")
                log.warning("%s: %s; the batch is left pending for the holder", self.name, e)
            except Exception as e:
                if not unavailable(e):
                    raise
                if self.stopping.is_set():
                    # Stopping and Redis is gone: what was prefetched stays pending and is
                    # re-delivered to this consumer when it comes back; nothing is lost.
                    log.warning("%s: redis unavailable while stopping (%s); exiting", self.name, e)
                    return
                self.status, self.detail = "degraded", f"redis unavailable: {e}"
                log.warning("%s: %s; retrying in %.2fs", self.name, self.detail, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                try:
                    await self.consumer.ensure_groups()
                    self.status, self.detail = "ok", ""
                except Exception as again:
                    if not unavailable(again):
                        raise

    async def _try_commit(self, out: Outputs, tries: int) -> bool:
        """One try at committing a handled batch (under ``batch_lock``): False when Redis refused it for now (full
        under ``noeviction``, a read-only replica, failing to persist: nothing of it applied); ``tries`` counts
        this one."""
        assert self.consumer is not None
        self._check_fence()
        try:
            await self.consumer.commit(out, prefetch=not self.stopping.is_set())
            return True
        except Exception as e:
            if not refused(e) or self.stopping.is_set():
                raise
            self._refused(e, tries)
            return False

    async def _commit_refused(self, batch: list[Entry], out: Outputs) -> None:
        """Send a refused commit's same outputs again, with a backoff, until Redis accepts them: the batch is
        neither lost nor handled twice, so the service's state stays in step with the bus. The waits are outside
        ``batch_lock`` (the gateway's control requests from the database go on meanwhile). Stopping gives up:
        the batch stays pending and the next run handles it again."""
        delay, tries = 0.05, 1
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            async with self.batch_lock:
                tries += 1
                if not await self._try_commit(out, tries):
                    continue
                log.warning("%s: redis accepts writes again; the batch went through after %d refusals",
                            self.name, tries - 1)
                if self.detail.startswith("redis refuses writes"):
                    self.status, self.detail = "ok", ""
                await self.after_commit(batch, out)
                return

    def fenced(self) -> str | None:
        """Why a handled batch must not be committed now (a standby that lost its lease), else None."""
        return None

    def _check_fence(self) -> None:
        why = self.fenced()
        if why:
            raise Fenced(why)

    def _refused(self, e: Exception, tries: int) -> None:
        self.count("commits_refused")
        self.status, self.detail = "degraded", f"redis refuses writes: {e}"
        now = time.monotonic()
        if tries == 1 or now - self._refused_logged >= 10:
            self._refused_logged = now
            log.warning("%s: redis refuses writes (%s); the batch is kept and sent again (backoff up to 1 s) "
                        "until it is accepted", self.name, e)

    async def nap(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the service is asked to stop meanwhile."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def heartbeat_once(self, status: str | None = None) -> None:
        if self.redis is None:
            return
        hb = Heartbeat(
            service=self.name,
            instance=self.instance,
            ts=time.time_ns(),
            status=status or self.status,
            detail=self.heartbeat_detail(),
            counters=dict(self.counters),
            started_at=self.started_at,
        )
        data = encode(hb)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(streams.health_key(self.name, self.instance), data, ex=self.common.health_ttl_s)
        pipe.xadd(streams.HEARTBEATS, {b"d": data}, maxlen=10_000, approximate=True)
        for stage, h in self.latency.items():
            if h.dirty:
                pipe.hset(streams.latency_key(stage), self.instance, h.encode())
                h.dirty = False
        await pipe.execute()
        self.last_heartbeat_ns = hb.ts

    async def _heartbeats(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.heartbeat_once()
            except Exception as e:
                if not unavailable(e):
                    raise
                log.debug("heartbeat failed: %s", e)  # the main loop reports Redis away or refusing
            await self.nap(self.common.heartbeat_s)

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("%s: stop requested; finishing the current batch", self.name)
            self.stopping.set()

    async def extra_tasks(self) -> list[asyncio.Task]:
        """Other long-running tasks of the service (servers, refreshers)."""
        return []

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        metrics = MetricsServer(self.metrics_snapshot, loop)
        if self.metrics_port:  # before anything else: a port that cannot be bound fails the start
            metrics.start(self.common.metrics_host, self.metrics_port, self.metrics_key)
        try:
            await self.start()
            if self.stopping.is_set():
                return 0
            self._tasks.append(asyncio.create_task(self._heartbeats(), name=f"{self.name}.heartbeat"))
            self._tasks.extend(await self.extra_tasks())
            main = asyncio.create_task(self.loop(), name=f"{self.name}.loop") if self.consumer else None
            waiters = [asyncio.create_task(self.stopping.wait(), name="stop")]
            if main:
                waiters.append(main)
            waiters.extend(self._tasks)
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.get_name() != "stop" and t.exception() is not None:
                    raise t.exception()
            self.stopping.set()
            if main:
                await main  # the loop finishes and commits its current batch, then returns
            return 0
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await metrics.stop()
            try:
                self.status = "stopping"
                await self.heartbeat_once("stopping")
                if self.redis is not None:
                    await self.redis.delete(streams.health_key(self.name, self.instance))
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
            await self.teardown()
            if self.consumer is not None:
                self.consumer.close()
            if self.redis is not None:
                await self.redis.aclose()


async def check_health(common: CommonSettings, service: str, max_age_s: float = 10.0,
                       instance: str | None = None) -> tuple[bool, str]:
    """True when some instance of ``service`` (or the one named ``instance``) has a fresh, good health key."""
    from common.messages import decode_as

    r = connect(common.redis_url, socket_connect_timeout=2)
    try:
        if instance is None:
            keys = [k async for k in r.scan_iter(match=streams.health_key(service, "*"))]
        else:
            keys = [streams.health_key(service, instance)]
        now = time.time_ns()
        for k in keys:
            data = await r.get(k)
            if not data:
                continue
            hb = decode_as(data, Heartbeat)
            age = (now - hb.ts) / 1e9
            if age <= max_age_s and hb.status in ("ok", "degraded"):
                return True, f"{service} {hb.instance} {hb.status} ({age:.1f}s ago) {hb.detail}"
        return False, f"{service}{'' if instance is None else ' ' + instance}: no fresh health key"
    finally:
        await r.aclose()


def main_entry(name: str, build: Callable[[list[str]], Any], argv: list[str] | None = None) -> int:
    """Thin ``python -m <service>`` entry: load settings, build, run, return an exit code.

    ``build(argv)`` returns the service (settings loaded inside, so ConfigError surfaces here).
    ``--check`` probes the service's health key instead of running it: any instance's, or with
    ``--self`` only this one's (``AITRADER_INSTANCE``, else the host name: what a container's
    healthcheck asks, so one healthy replica does not vouch for a stuck one).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if "--check" in argv:
            from common.config import load

            common = load(CommonSettings)
            own = (common.instance or socket.gethostname()) if "--self" in argv else None
            ok, msg = asyncio.run(check_health(common, name, instance=own))
            print(msg)
            return 0 if ok else 1
        service = build(argv)
    except ConfigError as e:
        print(f"{name}: configuration error: {e}", file=sys.stderr)
        return 2
    setup_logging(service.common.log_level, service.common.log_json)
    install_uvloop()
    try:
        return asyncio.run(service.run())
    except ConfigError as e:
        print(f"{name}: configuration error: {e}", file=sys.stderr)
        return 2
