"""The pattern engine service: TickBatches from ``md:ticks:{shard}`` in, Signals to ``pe:signals`` out.

Each bus batch (up to ``read_count`` entries) is run through the engine as one
micro-batch in ``before_batch``; ``handle`` then emits each entry's signals and counters
into the batch's Outputs, so publishing, counting and acking are one MULTI/EXEC.

Restart: feature state is in memory only and is rebuilt from the stream, so after a
restart every detector warms up again. Entries left pending by the previous run are
re-delivered by the Consumer first; signal ids are deterministic (symbol, tick ts_event,
tick seq, detector), so a signal re-published for a re-delivered tick carries the same id
and is recognised downstream.
"""

from __future__ import annotations

import gc
import logging
import time

from common import streams
from common.bus import Entry, Outputs
from common.config import CommonSettings, load
from common.messages import Signal, TickBatch
from common.service import Service
from pattern_engine.config import PatternEngineSettings
from pattern_engine.engine import PatternEngine, UnprocessableTicks
from pattern_engine.pattern_config import PatternConfig, load_pattern_config

__all__ = ["PatternEngineService", "build"]

log = logging.getLogger(__name__)


class PatternEngineService(Service):
    """Consumes the configured tick shards as group ``pattern_engine`` and publishes Signals."""

    name = streams.GROUP_PATTERN

    def __init__(
        self,
        common: CommonSettings,
        settings: PatternEngineSettings | None = None,
        pattern: PatternConfig | None = None,
    ) -> None:
        super().__init__(common)
        self.settings = settings if settings is not None else load(PatternEngineSettings)
        self.shards = self.settings.shard_list(common.shards)
        self.pattern = pattern if pattern is not None else load_pattern_config(self.settings.config)
        self.engine = PatternEngine(self.pattern, capacity=self.settings.symbol_capacity)
        # (stream, entry id) -> that entry's signals, or the reason it cannot be processed
        self._results: dict[tuple[str, bytes], list[Signal] | str] = {}

    def input_types(self) -> dict[str, type]:
        return {streams.ticks_stream(i): TickBatch for i in self.shards}

    async def setup(self) -> None:
        t0 = time.perf_counter()
        self.engine.warm_up()  # pay numba's compile / cache load now, not on the first tick
        # Start-up objects (numba, LLVM, pydantic: ~140k) never die; freezing them keeps a full
        # collection (~80 ms here) from stalling the hot path later.
        gc.collect()
        gc.freeze()
        log.info("%s: shards %s, detectors %s, kernel ready in %.2fs", self.name, self.shards,
                 [d.name for d in self.pattern.detectors if d.enabled], time.perf_counter() - t0)

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
        errors = self.engine.model_errors
        return f"{detail} model_errors={errors}" if errors else detail

    async def teardown(self) -> None:
        self.engine.close()


def build(argv: list[str] | None = None) -> PatternEngineService:
    """Load settings and the pattern file; raise ConfigError naming the bad key."""
    return PatternEngineService(load(CommonSettings), load(PatternEngineSettings))
