"""The pattern engine service with a registry model on a real Redis and database: hot swap under a
running stream without losing or reordering ticks, a bad promoted model refused while the previous one
runs on, the breaker's alert, and an idle start while the name has no promoted version."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from common import db, streams
from common.bus import DATA_FIELD
from common.config import CommonSettings, load
from common.messages import Control, Signal, TickBatch, decode, decode_as, encode
from pattern_engine.config import PatternEngineSettings
from pattern_engine.engine import PatternEngine
from pattern_engine.ml import registry as registry_mod
from pattern_engine.ml.registry import ModelRegistry
from pattern_engine.pattern_config import parse_pattern_config
from pattern_engine.service import PatternEngineService
from tests.onnx_models import make_bundle
from tests.unit.pattern_engine.stubs import random_walk

TICKS = streams.ticks_stream(0)
STATS = streams.stats_key("pattern_engine")


def pattern(model: str, **params: object):
    body = {"type": "onnx", "model": model, "warmup": 20, "cooldown": 0, "threshold": 0.34, "poll_s": 0.05,
            "timeout_us": 1_000_000, **params}  # generous: a loaded machine must not discard a slow call here
    return parse_pattern_config({"detectors": {"mlp": body}})


@pytest.fixture
def reg(database_url, tmp_path, clean_env):
    """A migrated registry that the engine's default registry (settings from the environment) also opens."""
    db.migrate(database_url)
    store = tmp_path / "store"
    clean_env.setenv("DATABASE_URL", database_url)
    clean_env.setenv("AITRADER_MODEL_STORE", str(store))
    clean_env.setattr(registry_mod, "_opened", {})
    eng = db.make_engine(database_url)
    yield ModelRegistry(eng, store)
    for reg in registry_mod._opened.values():
        reg.engine.dispose()
    eng.dispose()


@pytest.fixture
async def r(redis_url, reg):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def start(redis_url: str, cfg) -> tuple[PatternEngineService, asyncio.Task]:
    common = load(CommonSettings, redis_url=redis_url, instance="pe-ml", heartbeat_s=0.2, block_ms=5)
    svc = PatternEngineService(common, load(PatternEngineSettings, shards="0"), cfg)
    return svc, asyncio.create_task(svc.run(), name="pe-ml")


async def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def stats(r) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await r.hgetall(STATS)).items()}


async def alerts(r) -> list[Control]:
    return [decode(f[DATA_FIELD]) for _, f in await r.xrange(streams.ALERTS)]


def key(s: Signal) -> tuple:
    return (s.signal_id, s.side, s.strength, s.model_id)


async def test_a_promotion_under_a_running_stream_swaps_models_without_losing_or_reordering_ticks(reg, r, redis_url,
                                                                                                    tmp_path):
    v1 = reg.register(make_bundle(tmp_path / "a", name="m", seed=1), by="test")
    v2 = reg.register(make_bundle(tmp_path / "b", name="m", seed=2), by="test")
    reg.promote("m", v1.version, by="test", reason="first")
    ticks = random_walk(6000, 4, seed=11)
    batches = [TickBatch(ticks=ticks[i : i + 20], ts_ingest=time.time_ns()) for i in range(0, len(ticks), 20)]
    # what each version gives over the whole stream, in emission order (the swap must not touch the features)
    want = {}
    for v in (v1, v2):
        eng = PatternEngine(pattern(f"m@{v.version}"))
        want[str(v.version)] = [key(s) for b in batches for s in eng.on_batch(b)]
        eng.close()

    svc, task = await start(redis_url, pattern("m"))
    try:
        await wait_for(lambda: _health(r))
        sent = 0
        for i, b in enumerate(batches):
            await r.xadd(TICKS, {DATA_FIELD: encode(b)})
            sent += len(b.ticks)
            if i == len(batches) // 3:
                reg.promote("m", v2.version, by="test", reason="better")
            # One entry per read, as the reference saw them: the model runs once per bus batch, so two
            # entries read together give other (equally valid) signals, and the comparison below flaked
            # whenever the engine fell one entry behind. The promotion poller runs in between.
            deadline = time.monotonic() + 20
            while (await stats(r)).get("ticks", 0) < sent:
                assert time.monotonic() < deadline, f"entry {i} not consumed"
                await asyncio.sleep(0.001)
        await wait_for(lambda: _ticks(r, len(ticks)))
    finally:
        svc.request_stop()
        assert await asyncio.wait_for(task, 15) == 0

    got = [decode_as(f[DATA_FIELD], Signal) for _, f in await r.xrange(streams.SIGNALS)]
    versions = [s.model_version for s in got]
    assert versions[0] == "1" and versions[-1] == "2"
    switch = versions.index("2")
    assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}, "one switch, never back"
    # nothing lost or reordered: v1's signals up to the swap, then v2's from it, exactly as each model gives
    # them on the uninterrupted feature state
    before, after = [key(s) for s in got[:switch]], [key(s) for s in got[switch:]]
    assert before == want["1"][: len(before)]
    start_v2 = want["2"].index(after[0])
    assert after == want["2"][start_v2:]
    c = await stats(r)
    assert c["ticks"] == len(ticks) and c["model.mlp.swaps"] == 1
    swapped = [a for a in await alerts(r) if a.command == "model.swapped"]
    assert [(a.args["version"], a.args["previous"]) for a in swapped] == [("2", "1")]


async def test_a_promoted_model_that_cannot_load_is_refused_and_the_previous_one_keeps_running(reg, r, redis_url,
                                                                                               tmp_path):
    v1 = reg.register(make_bundle(tmp_path / "a", name="m", seed=1), by="test")
    v2 = reg.register(make_bundle(tmp_path / "b", name="m", seed=2), by="test")
    reg.promote("m", v1.version, by="test", reason="first")
    (reg.bundle_dir(v2) / "model.onnx").write_bytes(b"\x00garbage")  # the stored copy got damaged
    svc, task = await start(redis_url, pattern("m"))
    try:
        await wait_for(lambda: _health(r))
        reg.promote("m", v2.version, by="test", reason="broken on purpose")
        await wait_for(lambda: _alert(r, "model.swap_failed"))
        ticks = random_walk(2000, 3, seed=5)
        for i in range(0, len(ticks), 50):
            await r.xadd(TICKS, {DATA_FIELD: encode(TickBatch(ticks=ticks[i : i + 50]))})
        await wait_for(lambda: _ticks(r, len(ticks)))
        assert svc.onnx[0].model_version == "1"
    finally:
        svc.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
    got = [decode_as(f[DATA_FIELD], Signal) for _, f in await r.xrange(streams.SIGNALS)]
    assert got and {s.model_version for s in got} == {"1"}
    failed, = [a for a in await alerts(r) if a.command == "model.swap_failed"]
    assert failed.args == {"model": "m", "version": "2", "running": "1"} and "sha256" in failed.reason
    assert (await stats(r))["model.mlp.swap_failures"] == 1


async def test_no_promoted_version_starts_idle_and_picks_up_the_first_promotion(reg, r, redis_url, tmp_path):
    v1 = reg.register(make_bundle(tmp_path / "a", name="m", seed=1), by="test")
    cfg = pattern("m")
    assert cfg.batch[0].start() == [] and cfg.batch[0].model is None  # no promoted version: idle
    svc, task = await start(redis_url, cfg)
    try:
        await wait_for(lambda: _health(r))
        ticks = random_walk(1500, 3, seed=5)
        await r.xadd(TICKS, {DATA_FIELD: encode(TickBatch(ticks=ticks[:500]))})
        await wait_for(lambda: _ticks(r, 500))
        assert await r.xlen(streams.SIGNALS) == 0
        reg.promote("m", v1.version, by="test", reason="go")
        await wait_for(lambda: _alert(r, "model.swapped"))
        await r.xadd(TICKS, {DATA_FIELD: encode(TickBatch(ticks=ticks[500:]))})
        await wait_for(lambda: _ticks(r, 1500))
    finally:
        svc.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
    got = [decode_as(f[DATA_FIELD], Signal) for _, f in await r.xrange(streams.SIGNALS)]
    assert got and {(s.model_id, s.model_version) for s in got} == {("m", "1")}


def test_a_followed_name_not_registered_yet_starts_idle_but_a_pinned_version_must_exist(reg, tmp_path):
    from common.config import ConfigError

    assert PatternEngine(pattern("nosuch")).models[0].model is None
    with pytest.raises(ConfigError, match=r"detectors\.mlp\.model: .*no model named 'nosuch'"):
        PatternEngine(pattern("nosuch@1"))
    reg.register(make_bundle(tmp_path / "a", name="m", seed=1), by="test")
    with pytest.raises(ConfigError, match=r"detectors\.mlp\.model: .*no version 2"):
        PatternEngine(pattern("m@2"))


async def test_a_sustained_model_failure_alerts_on_the_bus_and_counts(reg, r, redis_url, tmp_path):
    v1 = reg.register(make_bundle(tmp_path / "a", name="m", seed=1), by="test")
    reg.promote("m", v1.version, by="test", reason="first")
    cfg = pattern("m", max_failures=3, failure_window=10, retry_after_s=3600, isolation="inline")
    det = cfg.batch[0]
    assert det.start() == [] and det.model is not None

    def broken(x):
        raise RuntimeError("device lost")

    det.model.backend.run = broken
    svc, task = await start(redis_url, cfg)
    try:
        await wait_for(lambda: _health(r))
        ticks = random_walk(1200, 3, seed=5)
        for i in range(0, len(ticks), 30):
            await r.xadd(TICKS, {DATA_FIELD: encode(TickBatch(ticks=ticks[i : i + 30]))})
        await wait_for(lambda: _ticks(r, len(ticks)))
    finally:
        svc.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
    disabled, = [a for a in await alerts(r) if a.command == "model.disabled"]
    assert disabled.scope == "detector:mlp" and disabled.args["model"] == "m" and "device lost" in disabled.reason
    c = await stats(r)
    assert c["model.mlp.errors"] == 3 and c["model.mlp.breaker_opened"] == 1 and c["model.mlp.skipped_breaker"] > 0
    assert c["ticks"] == len(ticks)


async def _health(r) -> bool:
    return bool(await r.exists(streams.health_key("pattern_engine", "pe-ml")))


async def _ticks(r, n: int) -> bool:
    return (await stats(r)).get("ticks", 0) >= n


async def _alert(r, command: str) -> bool:
    return any(a.command == command for a in await alerts(r))


def test_a_followed_name_starts_idle_while_the_registry_cannot_be_read(clean_env, tmp_path):
    clean_env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'absent.db'}")
    clean_env.setattr(registry_mod, "_opened", {})
    eng = PatternEngine(pattern("m"))
    assert eng.models[0].model is None
    assert not (tmp_path / "absent.db").exists()  # the engine opens the registry read-only: creates nothing
    eng.close()
    for reg in registry_mod._opened.values():
        reg.engine.dispose()
