"""The control panel in a real browser: initial load (bytes, time to interactive) and responsiveness of the Live
page while the pipeline replays real ticks at 10k ticks/s.

    python benchmarks/panel.py                            # 5 cold loads; 10 s quiet, 20 s at 10,000 ticks/s
    python benchmarks/panel.py --rate 10000 --seconds 20 --loads 5 --json

Builds nothing unless it must: serves ``frontend/dist`` (``npm run build`` only when it holds no index.html).
Starts a private pipeline (the four services as processes, own Redis db ``BENCH_REDIS_DB`` (default 12),
SQLite in a temporary folder unless ``DATABASE_URL`` is set) and the API serving the build, then drives
Debian's Chromium (``/usr/bin/chromium`` or ``CHROMIUM``; headless, no sandbox, no GPU) with playwright-core
(``frontend/e2e/bench.mjs``):

- **load**: ``--loads`` cold loads of ``/`` (a fresh browser context each, cache off): bytes on the wire and
  decoded (CDP Network events), the API's content encodings, and when the login form is usable (from the
  navigation's start); then login → app shell, and login → the socket's welcome ("Live");
- **responsiveness**: the Live page open (signed in, every channel), first ``--idle`` seconds quiet, then
  while real ticks (``--files``, default IBM and BAC of 2013-10-07 from ../shared/data) are published open
  loop at ``--rate`` ticks/s for ``--seconds`` through the running pipeline: main-thread long tasks
  (PerformanceObserver ``longtask``), frame gaps (requestAnimationFrame), timer drift (a 50 ms setTimeout
  chain), input delay (a key pressed every 100 ms through CDP: handler start − event time) and input to
  next frame, WebSocket frames received.

The API does not compress; the gzip size of each asset (level 6, what a compressing proxy would send)
is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline import publish_open_loop
from common import streams
from common.bus import connect
from tests.integration.harness import Pipeline, bench_setup
from tests.integration.test_api_kill_switch import ADMIN_PW, ApiProcess

FRONTEND = ROOT / "frontend"
DATA = Path(os.environ.get("AITRADER_SHARED_DATA", ROOT.parent / "shared" / "data"))
LEAN = "quantconnect_lean/equity_tick"
FILES = [f"{LEAN}/20131007_ibm_Trade_Tick.csv.gz", f"{LEAN}/20131007_ibm_Quote_Tick.csv.gz",
         f"{LEAN}/20131007_bac_Trade_Tick.csv.gz", f"{LEAN}/20131007_bac_Quote_Tick.csv.gz"]


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def ensure_build() -> None:
    if (FRONTEND / "dist" / "index.html").exists():
        return
    if not (FRONTEND / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=FRONTEND, check=True)
    subprocess.run(["npm", "run", "build"], cwd=FRONTEND, check=True)


def gzip_sizes() -> dict[str, tuple[int, int]]:
    out = {}
    for f in sorted((FRONTEND / "dist").rglob("*")):
        if f.is_file():
            raw = f.read_bytes()
            rel = f.relative_to(FRONTEND / "dist").as_posix()
            out["/ui/" + ("" if rel == "index.html" else rel)] = (len(raw), len(gzip.compress(raw, 6)))
    return out


def load_ticks(files: list[str], n: int) -> list:
    from tick_replay.source import open_ticks

    ticks = []
    for t in open_ticks([DATA / f for f in files]):
        ticks.append(t)
        if len(ticks) >= n:
            break
    return ticks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000, help="ticks/s published during the loaded window")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the loaded window")
    ap.add_argument("--idle", type=float, default=10.0, help="length of the quiet window before it")
    ap.add_argument("--loads", type=int, default=5, help="cold loads of the login page")
    ap.add_argument("--files", nargs="+", default=FILES, help="tick files under ../shared/data")
    ap.add_argument("--drain-timeout", type=float, default=180.0,
                    help="how long to wait, after the window, for the pipeline to consume every tick")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    a = ap.parse_args()
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        sys.exit(f"no Chromium at {chromium}: apt-get install -y chromium (or set CHROMIUM)")
    missing = [f for f in a.files if not (DATA / f).exists()]
    if missing:
        sys.exit(f"tick files not found under {DATA}: {missing}")
    if shutil.which("node") is None:
        sys.exit("node not found: the panel's benchmark needs Node.js 20+")
    ensure_build()
    n = int(a.rate * a.seconds)
    ticks = load_ticks(a.files, n)
    if len(ticks) < n:
        sys.exit(f"only {len(ticks):,} ticks in {a.files}; need {n:,}")

    redis_url, db_url, home = bench_setup("aitrader-bench-panel-")
    results: list[dict] = []
    with Pipeline(redis_url, db_url, home) as p:
        p.start()
        # every cold load signs in: the login rate limit (per client address) is opened up
        with ApiProcess(p, AITRADER_API_PANEL_DIR=str(FRONTEND / "dist"), AITRADER_API_LOGIN_RATE_LIMIT="1000") as api:
            env = {**os.environ, "PANEL_URL": api.url, "PANEL_USER": "chief", "PANEL_PASSWORD": ADMIN_PW,
                   "BENCH_LOADS": str(a.loads), "BENCH_IDLE_S": str(a.idle), "CHROMIUM": chromium,
                   "BENCH_SHOT": str(home / "bench-live.png")}
            node = subprocess.Popen(["node", "e2e/bench.mjs"], cwd=FRONTEND, env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)  # its progress and errors: on our stderr
            pub: dict = {}
            assert node.stdout is not None and node.stdin is not None
            for line in node.stdout:
                if line.startswith("RESULT "):
                    results.append(json.loads(line[7:]))
                elif line.strip() == "READY_LOAD":
                    print(f"panel: publishing {n:,} real ticks at {a.rate:,.0f}/s", file=sys.stderr, flush=True)
                    pub = asyncio.run(_publish(redis_url, ticks, a.rate))
                    print(f"panel: published in {pub['seconds']:.1f} s", file=sys.stderr, flush=True)
                    node.stdin.write("STOP\n")
                    node.stdin.close()
            if node.wait(60) != 0:
                sys.exit(f"bench.mjs failed (exit {node.returncode}): see above")
            print("panel: waiting for the pipeline to consume the rest", file=sys.stderr, flush=True)
            drained = asyncio.run(_drain(redis_url, pub.get("pe_before", 0) + n, a.drain_timeout))
    _print(a, results, pub, drained, home)
    if a.json:
        print(json.dumps({"results": results, "publish": pub, "drain_s": drained}, default=str))
    return 0


async def _publish(redis_url: str, ticks: list, rate: float) -> dict:
    r = connect(redis_url)
    try:
        pe0 = int(await r.hget(streams.stats_key(streams.GROUP_PATTERN), "ticks") or 0)
        secs, entries = await publish_open_loop(r, ticks, rate, 1)
        pe1 = int(await r.hget(streams.stats_key(streams.GROUP_PATTERN), "ticks") or 0)
        return {"ticks": len(ticks), "seconds": secs, "entries": entries, "rate": len(ticks) / secs,
                "pe_before": pe0, "pe_during": pe1 - pe0}
    finally:
        await r.aclose()


async def _drain(redis_url: str, target: int, timeout: float) -> float | None:
    """Seconds after the loaded window until the pattern engine has consumed every published tick."""
    r = connect(redis_url)
    t0 = time.perf_counter()
    try:
        while int(await r.hget(streams.stats_key(streams.GROUP_PATTERN), "ticks") or 0) < target:
            if time.perf_counter() - t0 > timeout:
                return None
            await asyncio.sleep(0.1)
        return time.perf_counter() - t0
    finally:
        await r.aclose()


def _row(name: str, xs: list[float], unit: str = "ms") -> str:
    return (f"  {name:<28} n={len(xs):>6,}  p50={pct(xs, 50):>8.1f}{unit}  p99={pct(xs, 99):>8.1f}{unit}  "
            f"max={max(xs, default=float('nan')):>8.1f}{unit}")


def _print(a: argparse.Namespace, results: list[dict], pub: dict, drained: float | None, home: Path) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}; Chromium {chromium_version()}")
    loads = [r for r in results if r["kind"] == "load"]
    if loads:
        first = loads[0]
        print(f"\ninitial load (cold, {len(loads)} runs): {first['requests']} requests, encodings "
              f"{', '.join(first['encodings'])}")
        gz = gzip_sizes()
        for asset in first["assets"]:
            _raw, z = gz.get(asset["url"].split("?")[0], (0, 0))
            print(f"  {asset['url']:<44} wire {asset['wire']:>9,} B  body {asset['body']:>9,} B  (gzip -6 would be "
                  f"{z:>8,} B)")
        print(f"  total on the wire {pct([r['wire_bytes'] for r in loads], 50):,.0f} B, decoded "
              f"{pct([r['body_bytes'] for r in loads], 50):,.0f} B")
        js_css = [x for x in gz if x.startswith("/ui/assets/") and x in {s['url'] for s in first['assets']}]
        print(f"  its assets gzip -6: {sum(gz[x][1] for x in js_css) + gz.get('/ui/', (0, 0))[1]:,} B")
        for k in ("response_start_ms", "fcp_ms", "dom_interactive_ms", "dom_content_loaded_ms", "load_event_ms",
                  "login_form_ms", "login_to_shell_ms", "login_to_socket_live_ms"):
            xs = [r[k] for r in loads if r.get(k) is not None]
            print(f"  {k:<28} p50={pct(xs, 50):>7.1f} ms  max={max(xs, default=float('nan')):>7.1f} ms")
        print(f"  after login: {first['after_login_requests']} requests, {first['after_login_wire_bytes']:,} B, "
              f"assets {first['after_login_assets'] or 'none'}")
    if pub:
        print(f"\nload: {pub['ticks']:,} real ticks published in {pub['seconds']:.1f} s ({pub['rate']:,.0f}/s, "
              f"{pub['entries']:,} entries); the pattern engine consumed {pub['pe_during']:,} of them meanwhile, "
              f"the rest {f'in {drained:.1f} s more' if drained is not None else 'not within --drain-timeout'}")
    for w in (r for r in results if r["kind"] == "window"):
        s = w["seconds"]
        lt = w["longtasks"]
        print(f"\nLive page, {w['label']} ({s:.1f} s): {w['frames'] / s:.1f} frames/s, {w['ws_frames'] / s:,.1f} WS "
              f"messages/s ({w['ws_bytes'] / s / 1024:,.1f} KiB/s), long tasks {len(lt)} "
              f"({sum(lt):,.0f} ms = {sum(lt) / s / 10:.1f} % of the time), blotter rows {w['blotter_rows']}")
        print(_row("long task duration", lt))
        print(_row("frame gap (rAF)", w["frame_gaps"]))
        print(_row("timer drift (50 ms chain)", w["drift"]))
        print(_row("input delay (keydown)", w["input_delay"]))
        print(_row("input to next frame", w["input_to_frame"]))
    print(f"\nscreenshot of the Live page after the load: {home / 'bench-live.png'}")


def chromium_version() -> str:
    try:
        return subprocess.run([os.environ.get("CHROMIUM", "/usr/bin/chromium"), "--version"], capture_output=True,
                              text=True, timeout=30, check=False).stdout.strip().removeprefix("Chromium ")
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
