"""Pattern engine hot path in process (no Redis): decode + features + detectors per bus entry.

    python benchmarks/pattern_engine.py                 # 4 and 100 symbols, batches of 1, 16, 256
    python benchmarks/pattern_engine.py --seconds 1 --json
    python benchmarks/pattern_engine.py --bus redis://127.0.0.1:6379/2 --rate 10000   # + tick->signal on Redis
    python benchmarks/pattern_engine.py --model auto --bus redis://127.0.0.1:6379/2 --rates 1000 10000

Synthetic random-walk trades and quotes (half each) are pre-encoded as TickBatch
payloads, exactly as they sit in ``md:ticks:{shard}``. Each timed step decodes one
payload (msgspec, typed), runs it through ``PatternEngine.on_batch`` with the shipped
``config/pattern.yml`` (features + the four rule detectors) and encodes the signals it
produced. Reported per configuration: p50/p99 µs per batch, µs per tick at the p50, and
sustained ticks/s. Each configuration runs for ``--seconds`` after a warm-up.

``--bus URL`` then also measures the real hop: it starts ``python -m pattern_engine`` on
that Redis (it deletes the ``md:ticks:{0}``, ``pe:signals``, stats and latency keys there
first: use a scratch database), publishes ``--bus-symbols`` symbols open-loop at ``--rate`` ticks/s for
``--bus-seconds`` (ticks due in the same millisecond go out as one entry stamped with
``ts_ingest``), stops the service (SIGTERM) and prints its tick_to_signal histogram, its CPU
per tick, and the floor measured first in the same run (one XADD then one XREADGROUP).

``--model DIR`` (a model bundle) or ``--model auto`` (an 11 → 32 → 32 → 3 MLP bundle written
to a temporary directory, the shape ``tests/onnx_models.py`` builds) adds an ``onnx`` detector
to the shipped detectors (``--backend``, default cpu): every configuration then runs the model
on the symbols that ticked in each batch, the table gains the model's cost, and the bus run
reports the rows per inference call it saw (the batch sizes under load). It also prints the
features alone (no detector) per tick, and each available backend's ``run`` cost at batch 1,
at the rows per call the engine saw, and at 64 / 256 rows (``benchmarks/inference.py`` does
the timing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from common.messages import Tick, TickBatch, TickType, decode_as, encode
from pattern_engine.engine import PatternEngine
from pattern_engine.pattern_config import DEFAULT_PATH, load_pattern_config
from tests.integration.harness import cpu_seconds

T0 = 1_700_000_000_000_000_000


def synthetic(n: int, symbols: int, seed: int = 1) -> list[Tick]:
    rng = np.random.default_rng(seed)
    px = np.full(symbols, 100.0)
    seq = np.zeros(symbols, dtype=np.int64)
    sym = rng.integers(symbols, size=n)
    moves = np.exp(rng.normal(0, 2e-4, size=n))
    kinds = rng.random(n) < 0.5
    sizes = rng.integers(1, 900, size=(n, 2)).astype(float)
    sides = rng.integers(-1, 2, size=n)
    out = []
    for i in range(n):
        s = int(sym[i])
        px[s] *= moves[i]
        seq[s] += 1
        p = round(float(px[s]), 2)
        name = f"SYM{s:03d}"
        if kinds[i]:
            out.append(Tick(symbol=name, type=TickType.TRADE, ts_event=T0 + i * 100_000, seq=int(seq[s]), price=p,
                            size=float(sizes[i, 0]), side=int(sides[i])))
        else:
            out.append(Tick(symbol=name, type=TickType.QUOTE, ts_event=T0 + i * 100_000, seq=int(seq[s]),
                            bid=p - 0.01, ask=p + 0.01, bid_size=float(sizes[i, 0]), ask_size=float(sizes[i, 1])))
    return out


def model_config(config_path: Path, model: str, backend: str, out_dir: Path, isolation: str = "auto") -> Path:
    """The pattern file plus an ``onnx`` detector running ``model`` (``auto``: a fresh MLP bundle)."""
    import yaml

    if model == "auto":
        sys.path.insert(0, str(ROOT))
        from tests.onnx_models import make_bundle

        model = str(make_bundle(out_dir / "bundle", name="bench_mlp", seed=1))
    doc = yaml.safe_load(config_path.read_text())
    doc["detectors"] = {k: v for k, v in doc["detectors"].items() if v.get("type") != "onnx"}  # only ours
    doc["detectors"]["mlp"] = {"type": "onnx", "model": str(Path(model).resolve()), "backend": backend,
                               "isolation": isolation, "warmup": 200, "cooldown": 100, "threshold": 0.6}
    path = out_dir / "pattern.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def features_only(seconds: float, config_path: Path, out_dir: Path) -> list[dict]:
    """The same loop with every detector removed: the feature update alone, per tick."""
    import yaml

    doc = yaml.safe_load(config_path.read_text())
    doc["detectors"] = {}
    path = out_dir / "features-only.yml"
    path.write_text(yaml.safe_dump(doc))
    return [bench(symbols, batch, seconds, path) for symbols, batch in ((4, 1), (100, 256))]


def inference(bundle: Path, batches: list[int], calls: int = 3000) -> list[dict]:
    """``backend.run`` p50 / p99 per available backend and batch size (benchmarks/inference.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from inference import _samples

    from pattern_engine.ml.backends import AUTO_ORDER, BackendUnavailable, make_backend
    from pattern_engine.ml.metadata import load_bundle

    meta, onnx = load_bundle(bundle)
    x = np.random.default_rng(0).normal(size=(max(batches), len(meta.features))).astype(np.float32)
    out = []
    for name in AUTO_ORDER:
        try:
            backend = make_backend(name, onnx, meta, max(batches))
        except BackendUnavailable as e:
            out.append({"backend": name, "unavailable": str(e).splitlines()[0][:120]})
            continue
        for k in batches:
            us = _samples(backend, x[:k], calls, 300)
            p50, p99 = np.percentile(us, [50, 99])
            out.append({"backend": name, "batch": k, "p50_us": round(float(p50), 2), "p99_us": round(float(p99), 2),
                        "us_per_row": round(float(p50) / k, 3)})
        backend.close()
    return out


def bench(symbols: int, batch: int, seconds: float, config_path: Path) -> dict:
    n_ticks = max(batch * 2000, 50_000)
    ticks = synthetic(n_ticks, symbols)
    payloads = [encode(TickBatch(ticks=ticks[i : i + batch], ts_ingest=T0))
                for i in range(0, len(ticks) - batch + 1, batch)]
    engine = PatternEngine(load_pattern_config(config_path))
    engine.warm_up()
    models = engine.models
    for p in payloads[:50]:  # warm caches and the symbol registry
        engine.on_batch(decode_as(p, TickBatch))
    times: list[int] = []
    signals = 0
    done = 0
    perf = time.perf_counter_ns
    deadline = perf() + int(seconds * 1e9)
    start = perf()
    i = 50
    while perf() < deadline:
        if i == len(payloads):
            i = 0  # replay the stream (the engine sees a second lap; the cost per tick is the same)
        t0 = perf()
        sigs = engine.on_batch(decode_as(payloads[i], TickBatch))
        for s in sigs:
            encode(s)
        times.append(perf() - t0)
        signals += len(sigs)
        done += batch
        i += 1
    elapsed = (perf() - start) / 1e9
    engine.close()
    rows = sum(m.stats.get("rows", 0) for m in models if hasattr(m, "stats"))
    calls = sum(m.stats.get("inferences", 0) for m in models if hasattr(m, "stats"))
    arr = np.array(times) / 1000.0
    p50, p99 = float(np.percentile(arr, 50)), float(np.percentile(arr, 99))
    return {
        "symbols": symbols,
        "batch": batch,
        "batches": len(times),
        "p50_us_per_batch": round(p50, 2),
        "p99_us_per_batch": round(p99, 2),
        "us_per_tick_p50": round(p50 / batch, 3),
        "ticks_per_s": int(done / elapsed),
        "signals": signals,
        "model_rows_per_call": round(rows / calls, 1) if calls else 0,
    }


async def bus(url: str, rate: int, seconds: float, symbols: int, config: Path | None = None) -> dict:
    import redis.asyncio as aioredis

    from common import streams
    from common.bus import DATA_FIELD
    from common.latency import LatencyHistogram

    r = aioredis.Redis.from_url(url)
    keys = [streams.ticks_stream(0), streams.SIGNALS, streams.stats_key("pattern_engine"),
            streams.latency_key("tick_to_signal"), streams.dlq_stream(streams.ticks_stream(0))]
    await r.delete(*keys)
    floor = await _floor(r)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
    env.update(REDIS_URL=url, AITRADER_SHARDS="1", AITRADER_INSTANCE="bench-pe", AITRADER_LOG_LEVEL="WARNING")
    if config is not None:
        env["AITRADER_PE_CONFIG"] = str(config)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pattern_engine", cwd=ROOT, env=env)
    try:
        for _ in range(300):  # wait for its health key (kernel warm-up included)
            if await r.exists(streams.health_key("pattern_engine", "bench-pe")):
                break
            await asyncio.sleep(0.1)
        ticks = synthetic(int(rate * seconds), symbols, seed=3)
        stream = streams.ticks_stream(0)
        cpu_start = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        i = 0
        while i < len(ticks):
            now = time.perf_counter() - t0
            due = min(len(ticks), int(now * rate) + 1)
            if due > i:  # everything due by now, as one entry (at most one entry per millisecond)
                batch = TickBatch(ticks=ticks[i:due], ts_ingest=time.time_ns())
                await r.xadd(stream, {DATA_FIELD: encode(batch)})
                i = due
            await asyncio.sleep(max(0.0, (int(now * 1000) + 1) / 1000 - (time.perf_counter() - t0)))
        sent_s = time.perf_counter() - t0
        for _ in range(200):
            done = int(await r.hget(streams.stats_key("pattern_engine"), "ticks") or 0)
            if done >= len(ticks):
                break
            await asyncio.sleep(0.05)
        cpu = cpu_seconds(proc.pid) - cpu_start
    finally:
        proc.terminate()  # SIGTERM: the service commits its batch and exits 0
        rc = await asyncio.wait_for(proc.wait(), 30)
    stats = {k.decode(): int(v) for k, v in (await r.hgetall(streams.stats_key("pattern_engine"))).items()}
    calls = sum(v for k, v in stats.items() if k.startswith("model.") and k.endswith(".inferences"))
    rows = sum(v for k, v in stats.items() if k.startswith("model.") and k.endswith(".rows"))
    raw = await r.hget(streams.latency_key("tick_to_signal"), "bench-pe")
    h = LatencyHistogram.decode(raw) if raw else LatencyHistogram()
    entries = await r.xlen(stream)
    await r.aclose()
    return {"rate": rate, "sent_s": round(sent_s, 2), "ticks": len(ticks), "entries": entries,
            "processed": done, "exit_code": rc, "service_cpu_s": round(cpu, 2),
            "service_cpu_us_per_tick": round(cpu / len(ticks) * 1e6, 1), "tick_to_signal_us": h.summary(),
            "floor_xadd_then_xreadgroup_us": floor, "model_calls": calls,
            "model_rows_per_call": round(rows / calls, 2) if calls else 0,
            "model_failures": {k: v for k, v in stats.items() if k.startswith("model.") and
                               k.rsplit(".", 1)[1] in ("errors", "timeouts", "breaker_opened")}}


async def _floor(r) -> dict:
    """One XADD then one XREADGROUP, one at a time: the bus hop any consumer pays."""
    from common.latency import LatencyHistogram

    stream, group = "bench:pe:floor", "bench"
    await r.delete(stream)
    await r.xgroup_create(stream, group, id="0", mkstream=True)
    h = LatencyHistogram()
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        await r.xadd(stream, {b"d": b"x" * 100})
        resp = await r.xreadgroup(group, "c", {stream: ">"}, count=1)
        h.record_ns(time.perf_counter_ns() - t0)
        await r.xack(stream, group, resp[0][1][0][0])
    await r.delete(stream)
    return h.summary()



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, nargs="+", default=[4, 100])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per configuration")
    ap.add_argument("--config", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--json", action="store_true", help="print one JSON object per configuration")
    ap.add_argument("--bus", metavar="REDIS_URL", help="also measure tick->signal through Redis (scratch db)")
    ap.add_argument("--rate", type=int, default=10_000, help="ticks/s published in --bus mode")
    ap.add_argument("--rates", type=int, nargs="+", help="several rates in --bus mode (overrides --rate)")
    ap.add_argument("--model", metavar="DIR|auto", help="add an onnx detector running this bundle (auto: an MLP)")
    ap.add_argument("--backend", default="cpu", help="the onnx detector's backend with --model")
    ap.add_argument("--isolation", default="auto", choices=["auto", "thread", "inline"], help="the onnx detector's isolation")
    ap.add_argument("--bus-seconds", type=float, default=8.0)
    ap.add_argument("--bus-symbols", type=int, default=10, help="symbols in --bus mode (few: they warm up fast)")
    args = ap.parse_args()
    bundle = None
    if args.model:
        import tempfile

        import yaml

        tmp = Path(tempfile.mkdtemp(prefix="bench-pe-"))
        base = args.config
        args.config = model_config(args.config, args.model, args.backend, tmp, args.isolation)
        bundle = Path(yaml.safe_load(args.config.read_text())["detectors"]["mlp"]["model"])
        for r in features_only(args.seconds, base, tmp):
            if args.json:
                print(json.dumps({"features_only": r}))
            else:
                print(f"# features alone (no detector): {r['symbols']} symbols, batch {r['batch']}: "
                      f"{r['us_per_tick_p50']} µs/tick (p50 of the batch / batch)")

    t0 = time.perf_counter()
    PatternEngine(load_pattern_config(args.config)).warm_up()
    warm = time.perf_counter() - t0
    if not args.json:
        print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
              f"kernel warm-up {warm * 1000:.0f} ms (numba cache load or compile)")
        if args.model:
            print(f"# with the onnx detector: {args.model} on {args.backend}, isolation {args.isolation}")
        print(f"{'symbols':>7} {'batch':>5} {'p50 µs/batch':>13} {'p99 µs/batch':>13} {'µs/tick':>8} "
              f"{'ticks/s':>11} {'signals':>8}" + (f" {'rows/call':>9}" if args.model else ""))
    for symbols in args.symbols:
        for batch in args.batches:
            r = bench(symbols, batch, args.seconds, args.config)
            if args.json:
                print(json.dumps(r))
            else:
                print(f"{r['symbols']:>7} {r['batch']:>5} {r['p50_us_per_batch']:>13.1f} "
                      f"{r['p99_us_per_batch']:>13.1f} {r['us_per_tick_p50']:>8.3f} {r['ticks_per_s']:>11,} "
                      f"{r['signals']:>8}" + (f" {r['model_rows_per_call']:>9}" if args.model else ""))
    seen: list[float] = []
    for rate in (args.rates or [args.rate]) if args.bus else []:
        res = asyncio.run(bus(args.bus, rate, args.bus_seconds, args.bus_symbols,
                              args.config if args.model or args.config != DEFAULT_PATH else None))
        if args.json:
            print(json.dumps(res))
        else:
            lat = res["tick_to_signal_us"]
            print(f"# bus: {res['ticks']:,} ticks at {res['rate']:,}/s in {res['entries']:,} entries "
                  f"({res['sent_s']} s), processed {res['processed']:,}, service exit {res['exit_code']}, "
                  f"service CPU {res['service_cpu_s']} s = {res['service_cpu_us_per_tick']} µs/tick")
            print(f"# tick_to_signal (ts_signal - ts_ingest): n={lat['count']} p50={lat['p50']} µs "
                  f"p99={lat['p99']} µs p999={lat['p999']} µs max={lat['max']} µs")
            fl = res["floor_xadd_then_xreadgroup_us"]
            print(f"# floor, XADD then XREADGROUP one at a time: p50={fl['p50']} µs p99={fl['p99']} µs "
                  f"p999={fl['p999']} µs")
            if res["model_calls"]:
                print(f"# model: {res['model_calls']:,} inference calls, {res['model_rows_per_call']} rows per call, "
                      f"failures {res['model_failures'] or 'none'}")
        if res["model_calls"]:
            seen.append(res["model_rows_per_call"])
    if bundle is not None:
        sizes = sorted({1, *(max(1, round(v)) for v in seen), 64, 256})
        rows = inference(bundle, sizes)
        if args.json:
            print(json.dumps({"inference": rows}))
        else:
            print(f"# inference per backend (run() only), batch sizes: 1, seen under load {seen or '-'}, 64, 256")
            for r in rows:
                if "unavailable" in r:
                    print(f"#   {r['backend']}: unavailable ({r['unavailable']})")
                else:
                    print(f"#   {r['backend']:<13} batch {r['batch']:>4}: p50 {r['p50_us']:7.2f} µs, "
                          f"p99 {r['p99_us']:7.2f} µs, {r['us_per_row']:.3f} µs/row")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
