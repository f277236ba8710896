"""The control panel (frontend/): its Vitest suite, its generated API types, and end-to-end runs in
Chromium: against the real API and gateway serving the built panel, and against the whole pipeline
replaying real tick files (../shared/data; skipped where it is absent).

Needs node and npm (``npm ci`` runs here when frontend/node_modules is missing or older than the
lockfile); the end-to-end test also needs Debian's chromium (/usr/bin/chromium, or ``CHROMIUM``).
Each skips with the reason when what it needs is missing. Screenshots of every page land in
``var/test-output/panel-e2e/`` and ``var/test-output/panel-e2e-pipeline/`` (``AITRADER_PANEL_SHOTS`` to change
the first; the second is its sibling ``<name>-pipeline``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.api.users import create_user
from common.db import make_engine
from tests.integration.harness import ROOT, Pipeline
from tests.integration.kill_drill import Reports, drill_env, publish_mark, rest_orders
from tests.integration.test_api_kill_switch import ApiProcess
from tests.integration.test_jobs import FAST, Worker

FRONTEND = ROOT / "frontend"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("AITRADER_PANEL_SHOTS", ROOT / "var" / "test-output" / "panel-e2e"))
USERS = {"admin": ["chief", "drill-admin-pw-7Hq2x"], "trader": ["trader", "e2e-trader-pw-5Kd3w"],
         "viewer": ["viewer", "e2e-viewer-pw-8Jp4s"]}
SHOTS_PIPELINE = SHOTS.with_name(SHOTS.name + "-pipeline")
LEAN = "quantconnect_lean/equity_tick"
DAY1 = (f"{LEAN}/20131007_ibm_Trade_Tick.csv.gz", f"{LEAN}/20131007_ibm_Quote_Tick.csv.gz")
DAY2 = (f"{LEAN}/20131008_ibm_Trade_Tick.csv.gz", f"{LEAN}/20131008_ibm_Quote_Tick.csv.gz")
PIPELINE_PAGES = ("10-live-real-file", "11-health-latency", "12-live-halted", "13-backtest-real-file",
                  "14-models-uploaded")
PAGES = ("00-login", "01-live", "02-health", "03-backtests", "04-models", "05-jobs", "06-kill-switch-trader",
         "07-kill-switch-viewer", "08-kill-switch-admin-light", "09-live-light")


def _build_or_skip() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)")
    build = _npm("run", "build")
    assert build.returncode == 0, f"build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"


def _npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["npm", *args], cwd=FRONTEND, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def frontend() -> Path:
    """frontend/ with its node_modules installed from the lockfile."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not found: the panel's tests need Node.js 20+ and npm")
    marker = FRONTEND / "node_modules" / ".package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < (FRONTEND / "package-lock.json").stat().st_mtime:
        p = _npm("ci", "--no-audit", "--no-fund", timeout=600)
        assert p.returncode == 0, f"npm ci failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return FRONTEND


def test_vitest_component_tests(frontend):
    p = _npm("test")
    assert p.returncode == 0, f"vitest failed:\n{p.stdout[-6000:]}\n{p.stderr[-3000:]}"
    assert " passed" in p.stdout


def test_generated_api_types_match_the_api(frontend):
    p = subprocess.run([sys.executable, "scripts/gen_api_client.py", "--check"], cwd=ROOT, capture_output=True, check=False,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


def test_panel_end_to_end_in_chromium(frontend, redis_url, database_url, tmp_path):
    """Log in, see the kill switch and the socket live, cancel an order, launch a backtest on a real worker and
    see its equity curve, see every page; a trader engages, a viewer cannot (panel and API), an admin
    releases after confirming."""
    _build_or_skip()
    shutil.rmtree(SHOTS, ignore_errors=True)
    home = tmp_path / "home"
    with Pipeline(redis_url, database_url, home, drill_env(home)) as p:
        p.start(("execution",))
        r = p.redis()
        reports = Reports(r)
        publish_mark(r)
        rest_orders(r, reports, 3)
        eng = make_engine(database_url)
        try:
            for role in ("trader", "viewer"):
                create_user(eng, USERS[role][0], USERS[role][1], role)
        finally:
            eng.dispose()
        worker = Worker({**p.env, **FAST}, "panel", home / "worker.log")  # runs the backtest the panel launches
        try:
            worker.wait_ready()
            _run_e2e(p, worker.log)
        finally:
            worker.stop()
    assert sorted(f.stem for f in SHOTS.glob("*.png")) == sorted(PAGES)


def _run_e2e(p: Pipeline, worker_log: Path) -> None:
    """The API serving the build, and e2e/panel.e2e.mjs driving Chromium against it."""
    with ApiProcess(p, AITRADER_API_PANEL_DIR=str(FRONTEND / "dist"),
                    AITRADER_ADMIN_USERNAME=USERS["admin"][0], AITRADER_ADMIN_PASSWORD=USERS["admin"][1]) as api:
        env = {**os.environ, "PANEL_URL": api.url, "PANEL_USERS": json.dumps(USERS), "PANEL_SHOTS": str(SHOTS),
               "CHROMIUM": CHROMIUM}
        e2e = subprocess.run(["node", "e2e/panel.e2e.mjs"], cwd=FRONTEND, env=env, capture_output=True, text=True, check=False,
                             timeout=300)
        assert e2e.returncode == 0, (f"e2e failed:\n{e2e.stdout[-4000:]}\n{e2e.stderr[-4000:]}\n"
                                     f"API log:\n{api.log.read_text()[-3000:]}\n"
                                     f"worker log:\n{worker_log.read_text(errors='replace')[-3000:]}")


def test_panel_against_the_pipeline_replaying_a_real_file(frontend, redis_url, database_url, shared_data, tmp_path):
    """The whole pipeline (four services), a job worker and the API serving the build; Chromium drives the panel
    (frontend/e2e/pipeline.e2e.mjs) while real IBM ticks are replayed: P&L, fills and signals appear over the
    socket, today's P&L survives a reload, Health shows every stage's latency; the kill switch engaged from the
    panel lets no order through a second day's replay (intents blocked); an admin releases; a backtest over a
    real file runs on the worker and shows its equity curve; an ONNX model is uploaded."""
    from tests.onnx_models import DEFAULT_FEATURES, mlp_onnx

    missing = [f for f in (*DAY1, *DAY2) if not (shared_data / f).exists()]
    if missing:
        pytest.skip(f"real tick files not found under {shared_data}: {missing}")
    _build_or_skip()
    shutil.rmtree(SHOTS_PIPELINE, ignore_errors=True)
    model = tmp_path / "e2e_mlp.onnx"
    model.write_bytes(mlp_onnx(len(DEFAULT_FEATURES), seed=3))
    home = tmp_path / "home"
    with Pipeline(redis_url, database_url, home) as p:
        p.start()
        # the default lease (30 s), not FAST's 3 s: with the four services busy a heartbeat can be late
        worker = Worker(p.env, "panel-pipeline", home / "worker.log")
        try:
            worker.wait_ready()
            with ApiProcess(p, AITRADER_API_PANEL_DIR=str(FRONTEND / "dist"),
                            AITRADER_ADMIN_USERNAME=USERS["admin"][0], AITRADER_ADMIN_PASSWORD=USERS["admin"][1]) as api:
                env = {**os.environ, **p.env, "PANEL_URL": api.url, "PANEL_USERS": json.dumps({"admin": USERS["admin"]}),
                       "PANEL_SHOTS": str(SHOTS_PIPELINE), "CHROMIUM": CHROMIUM, "PANEL_PYTHON": sys.executable,
                       "PANEL_ROOT": str(ROOT), "PANEL_DAY1": json.dumps([str(shared_data / f) for f in DAY1]),
                       "PANEL_DAY2": json.dumps([str(shared_data / f) for f in DAY2]),
                       "PANEL_BACKTEST": str(shared_data / DAY1[0]), "PANEL_MODEL": str(model),
                       "PANEL_FEATURES": ",".join(DEFAULT_FEATURES)}
                e2e = subprocess.run(["node", "e2e/pipeline.e2e.mjs"], cwd=FRONTEND, env=env, capture_output=True,
                                     text=True, check=False, timeout=600)
                assert e2e.returncode == 0, (
                    f"e2e failed:\n{e2e.stdout[-4000:]}\n{e2e.stderr[-4000:]}\nAPI log:\n{api.log.read_text()[-3000:]}\n"
                    f"worker log:\n{worker.log.read_text(errors='replace')[-3000:]}\n"
                    + "\n".join(f"{s} log:\n{p.log(s)[-1500:]}" for s in p.procs))
        finally:
            worker.stop()
    print(e2e.stdout)
    assert sorted(f.stem for f in SHOTS_PIPELINE.glob("*.png")) == sorted(PIPELINE_PAGES)
