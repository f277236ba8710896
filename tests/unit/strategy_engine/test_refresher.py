"""The account refresh's worker process (strategy_engine/refresher.py) never outlives the engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# An engine-like parent: one refresh against a broker that is not there (the worker starts and stays),
# prints its worker's pid, then waits to be killed.
PARENT = r"""
import asyncio, sys
from common.config import CommonSettings, load
from strategy_engine.config import StrategySettings
from strategy_engine.mcp_client import BrokerClientError
from strategy_engine.refresher import ProcessRefresher

async def main():
    r = ProcessRefresher(load(StrategySettings, mcp_url="http://127.0.0.1:9/mcp"), load(CommonSettings))
    try:
        await r.snapshot()
    except BrokerClientError as e:
        pass
    print(" ".join(map(str, r.worker_pids())), flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited; whoever adopted it reaps it


def test_the_worker_exits_when_the_engine_is_killed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
    env["AITRADER_HOME"] = str(tmp_path)
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 1, f"expected one worker, got {line!r} (parent exit {parent.poll()})"
        worker = pids[0]
        assert _alive(worker)
        time.sleep(1.0)
        assert _alive(worker), "the worker must stay while its engine lives"
        parent.send_signal(signal.SIGKILL)  # no shutdown of the pool: what a crash or OOM kill leaves
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), f"refresh worker {worker} outlived its engine"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
