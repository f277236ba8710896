"""The pattern engine service: TickBatches from ``md:ticks:{shard}`` in, Signals to ``pe:signals`` out.

Each bus batch (up to ``read_count`` entries) is run through the engine as one
micro-batch in ``before_batch``; ``handle`` then emits each entry's signals and counters
into the batch's Outputs, so publishing, counting and acking are one MULTI/EXEC.

Models (``type: onnx`` detectors, ``pattern_engine/ml/detector.py``): a detector whose
``model:`` names a registry model follows its promoted version. A background task asks the
registry every ``poll_s``; on a new version it loads and checks the bundle off the hot path
(in a thread), then swaps it in under the batch lock: between two batches, so no tick is
dropped or reordered. A bundle that fails to load is reported (``model.swap_failed`` on
``sys:alerts``) and the previous model keeps running. The detectors' counters
(``model.<detector>.<key>``) and alerts (``model.disabled`` / ``model.enabled``) are
committed with the batch that produced them.

Restart: feature state is in memory only and is rebuilt from the stream, so after a
restart every detector warms up again. Entries left pending by the previous run are
re-delivered by the Consumer first; signal ids are deterministic (symbol, tick ts_event,
tick seq, detector), so a signal re-published for a re-delivered tick carries the same id
and is recognised downstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from common import streams
from common.bus import Entry, Outputs, unavailable
from common.config import CommonSettings, load
from common.messages import Control, Signal, TickBatch, encode
from common.service import Service
from pattern_engine.config import PatternEngineSettings
from pattern_engine.engine import PatternEngine, UnprocessableTicks
from pattern_engine.ml.detector import ModelLoadError, OnnxDetector, registry_unavailable
from pattern_engine.pattern_config import PatternConfig, load_pattern_config

__all__ = ["PatternEngineService", "build"]

log = logging.getLogger(__name__)

# The lease's value is the holder's instance name: renew (PEXPIRE) or release (DEL) only one's own.
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class PatternEngineService(Service):
    """Consumes the configured tick shards as group ``pattern_engine`` and publishes Signals."""

    name = streams.GROUP_PATTERN

    def __init__(
        self,
        common: CommonSettings,
        settings: PatternEngineSettings | None = None,
        pattern: PatternConfig | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(common)
        self.settings = settings if settings is not None else load(PatternEngineSettings)
        self.serve_metrics_from(self.settings)
        self.shards = self.settings.shard_list(common.shards)
        self.pattern = pattern if pattern is not None else load_pattern_config(self.settings.config)
        # ``clock`` stamps ts_signal: a backtest passes its simulated clock (backend/backtest).
        self.engine = PatternEngine(self.pattern, capacity=self.settings.symbol_capacity, clock=clock)
        # (stream, entry id) -> that entry's signals, or the reason it cannot be processed
        self._results: dict[tuple[str, bytes], list[Signal] | str] = {}
        self.onnx = [d for d in self.engine.models if isinstance(d, OnnxDetector)]
        # name -> the registry's promoted version (None: no promoted version); replaceable in tests
        self.promoted_version: Callable[[str], str | None] = _registry_promoted_version
        self._failed_versions: set[tuple[str, str]] = set()
        self._no_promoted: set[str] = set()

        self.standby = self.settings.standby
        if self.standby:
            self.active.clear()  # until this engine holds the lease
        self._lease_key = streams.pattern_lease_key(self.shards)
        self._lease_until = 0.0  # monotonic: past it, the lease may be someone else's

    def input_types(self) -> dict[str, type]:
        return {streams.ticks_stream(i): TickBatch for i in self.shards}

    async def setup(self) -> None:
        t0 = time.perf_counter()
        self.engine.warm_up()  # pay numba's compile / cache load now, not on the first tick
        # (start-up objects are frozen out of the garbage collector by Service.start, after set-up)
        log.info("%s: shards %s, detectors %s, kernel ready in %.2fs", self.name, self.shards,
                 [d.name for d in self.pattern.detectors if d.enabled], time.perf_counter() - t0)
        for d in self.onnx:
            m = d.model
            if m is not None:
                log.info("%s: detector %s runs model %s@%s (%s backend, %s)", self.name, d.name, m.name, m.version,
                         m.backend.describe(), m.source)

    async def process(self, batch: list[Entry]) -> Outputs:
        out = await super().process(batch)
        for d in self.onnx:  # batch-level: outside the per-entry rollback
            for key, n in d.drain_stats().items():
                out.incr(f"model.{d.name}.{key}", n)
            while d.alerts:
                command, reason, args = d.alerts.pop(0)
                out.publish(streams.ALERTS, self._alert(command, d.name, reason, args))
        return out

    def _alert(self, command: str, detector: str, reason: str, args: dict[str, str]) -> Control:
        now = time.time_ns()
        return Control(request_id=f"{self.name}-{command}-{detector}-{now}", command=command,
                       scope=f"detector:{detector}", reason=reason[:2000], actor=self.name, args=args, ts=now)

    async def extra_tasks(self) -> list[asyncio.Task]:
        tasks = []
        if self.standby:
            tasks.append(asyncio.create_task(self._hold_lease(), name=f"{self.name}.lease"))
        followers = [d for d in self.onnx if d.follows and d.params.poll_s > 0]
        if followers:
            tasks.append(asyncio.create_task(self._follow_models(followers), name=f"{self.name}.models"))
        return tasks

    # -- standby: one engine of several reads a shard set's group, by lease ---------------------
    def fenced(self) -> str | None:
        if not self.standby:
            return None
        if not self.active.is_set():
            return "lost the lease"
        if time.monotonic() > self._lease_until:
            return "could not renew the lease in time"
        return None

    async def _hold_lease(self) -> None:
        """Take the lease when it is free, renew it while held (every third of its TTL), let it go when it could
        not be renewed for two thirds of it. Holding it, this engine reads; losing it, it stops at once."""
        ttl = self.settings.lease_ms
        period = ttl / 3000
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                if self.active.is_set():
                    if await self.redis.eval(_RENEW, 1, self._lease_key, self.instance, ttl):
                        self._lease_until = sent + 2 * period
                    else:
                        await self._lose_lease("the lease is held by another engine")
                elif await self.redis.set(self._lease_key, self.instance, nx=True, px=ttl):
                    self._lease_until = sent + 2 * period
                    await self._take_lease()
            except Exception as e:
                if not unavailable(e):
                    raise
                if self.active.is_set() and time.monotonic() > self._lease_until:
                    await self._lose_lease(f"cannot renew the lease: {e}")
            await self.nap(period)

    async def _take_lease(self) -> None:
        assert self.consumer is not None
        async with self.batch_lock:
            self.engine.reset()  # what it saw while it last led is stale: features start cold, as after a restart
            claimed = await self.consumer.take_over()
            self.active.set()
        self.count("leases_taken")
        log.warning("%s: took the lease of shards %s; %d entries left pending by the previous holder claimed",
                    self.name, self.shards, claimed)

    async def _lose_lease(self, why: str) -> None:
        self.active.clear()
        async with self.batch_lock:
            if self.consumer is not None:
                self.consumer.forget_backlog()
        self.count("leases_lost")
        log.warning("%s: %s; standing by (shards %s)", self.name, why, self.shards)


    async def _follow_models(self, detectors: list[OnnxDetector]) -> None:
        period = min(d.params.poll_s for d in detectors)
        while not self.stopping.is_set():
            for d in detectors:
                try:
                    await self.check_model(d)
                except Exception as e:
                    self.count("model_poll_errors")
                    n = self.counters["model_poll_errors"]
                    if not (n in (1, 10, 100) or n % 1000 == 0):
                        continue
                    if isinstance(e, registry_unavailable()):  # one line: the database's error, not its SQL
                        log.warning("%s: cannot read the model registry for %s (%d times): %s", self.name,
                                    d.follows, n, str(e).splitlines()[0][:300])
                    else:
                        log.exception("%s: checking the model registry for %s failed (%d times)", self.name,
                                      d.follows, n)
            await self.nap(period)

    async def check_model(self, d: OnnxDetector) -> bool:
        """Swap ``d`` to its name's promoted version if that changed; True if it swapped."""
        name = d.follows
        assert name is not None
        version = await asyncio.to_thread(self.promoted_version, name)
        if version is None:
            if name not in self._no_promoted:
                self._no_promoted.add(name)
                log.warning("%s: model %s has no promoted version in the registry; %s keeps running %s@%s",
                            self.name, name, d.name, d.model_id, d.model_version)
            return False
        self._no_promoted.discard(name)
        if version == d.model_version or (name, version) in self._failed_versions:
            return False
        t0 = time.perf_counter()
        try:
            new = await asyncio.to_thread(d.load, f"{name}@{version}")
        except ModelLoadError as e:
            self._failed_versions.add((name, version))
            d.stats["swap_failures"] = d.stats.get("swap_failures", 0) + 1  # committed with the next batch
            log.error("%s: cannot load %s@%s (promoted): %s; %s keeps running %s@%s", self.name, name, version, e,
                      d.name, d.model_id, d.model_version)
            await self._publish_alert("model.swap_failed", d.name, str(e),
                                      {"model": name, "version": version, "running": d.model_version})
            return False
        async with self.batch_lock:  # between two batches: no tick sees half a swap
            old = d.swap(new)
        log.warning("%s: detector %s now runs %s@%s (was %s@%s; loaded in %.0f ms)", self.name, d.name, name,
                    version, old.name if old else "-", old.version if old else "-", (time.perf_counter() - t0) * 1e3)
        if old is not None:
            await asyncio.to_thread(old.close)
        await self._publish_alert("model.swapped", d.name, f"now running {name}@{version}",
                                  {"model": name, "version": version, "previous": old.version if old else ""})
        return True

    async def _publish_alert(self, command: str, detector: str, reason: str, args: dict[str, str]) -> None:
        if self.redis is None:
            return
        try:
            await self.redis.xadd(streams.ALERTS, {b"d": encode(self._alert(command, detector, reason, args))},
                                  maxlen=self.common.stream_maxlen, approximate=True)
        except Exception:  # noqa: BLE001 - an alert that cannot be sent is logged above
            log.warning("%s: could not publish %s alert", self.name, command)

    async def before_batch(self, batch: list[Entry]) -> None:
        self._results = {}
        try:
            results: list[list[Signal] | str] = list(self.engine.on_batches([e.msg for e in batch]))
        except UnprocessableTicks:
            # A value the wire types accept but the engine cannot hold (ts_event beyond int64).
            # Conversion fails before any state changes, so redo entry by entry.
            results = []
            for e in batch:
                try:
                    results.append(self.engine.on_batches([e.msg])[0])
                except UnprocessableTicks as err:
                    results.append(f"unprocessable tick batch: {err}")
        except Exception:  # state may be half-updated: drop it and leave the entries to be retried
            log.exception("%s: engine failed on a batch of %d entries; state reset", self.name, len(batch))
            self.count("engine_errors")
            self.engine.reset()
            return
        for e, r in zip(batch, results):
            self._results[(e.stream, e.id)] = r

    async def handle(self, entry: Entry, out: Outputs) -> None:
        res = self._results.pop((entry.stream, entry.id), None)
        if res is None:
            raise RuntimeError("engine failed on this entry's batch; left pending for retry")
        if isinstance(res, str):
            out.dead_letter(entry, res)
            return
        batch: TickBatch = entry.msg
        out.incr("ticks", len(batch.ticks))
        if batch.books:
            out.incr("book_updates", len(batch.books))
        if not res:
            return
        out.incr("signals", len(res))
        h = self.hist("tick_to_signal")
        for sig in res:
            out.publish(streams.SIGNALS, sig)
            out.incr("signals." + sig.detector)
            ingest = batch.ts_ingest or sig.ts_ingest
            if ingest > 0:
                h.record_ns(sig.ts_signal - ingest)

    def heartbeat_detail(self) -> str:
        detail = f"symbols={len(self.engine.state.symbols)} ticks={self.engine.ticks_seen}"
        if self.engine.book_updates:
            bs = self.engine.book_totals()
            detail += (f" book_updates={self.engine.book_updates} book_gaps={bs.gaps} book_crossed={bs.crossed}"
                       f" book_bad_levels={bs.bad_levels}")
        for d in self.onnx:
            if d.model is None:
                detail += f" {d.name}=idle(no promoted {d.follows})"
            else:
                detail += f" {d.name}={d.model_id}@{d.model_version}" + (" (breaker open)" if d.breaker_open else "")
        if self.standby:
            detail += " lease=held" if self.active.is_set() else " lease=standby"
        errors = self.engine.model_errors
        return f"{detail} model_errors={errors}" if errors else detail

    async def teardown(self) -> None:
        if self.standby and self.active.is_set() and self.redis is not None:
            try:  # stopped cleanly: the next engine takes over now, not when the lease runs out
                await self.redis.eval(_RELEASE, 1, self._lease_key, self.instance)
            except Exception as e:
                log.warning("%s: could not release the lease (%s); it runs out by itself", self.name, e)
        self.engine.close()


def _registry_promoted_version(name: str) -> str | None:
    from pattern_engine.ml.registry import promoted_version

    return promoted_version(name)


def build(argv: list[str] | None = None) -> PatternEngineService:
    """Load settings and the pattern file; raise ConfigError naming the bad key."""
    return PatternEngineService(load(CommonSettings), load(PatternEngineSettings))
