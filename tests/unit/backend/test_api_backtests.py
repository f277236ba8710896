"""``/backtests`` end to end: the API queues backtest jobs and a sweep, a real worker process
(``python -m backend.jobs.worker``) runs them on the test Redis db and database, and the API reads the
rows, the metrics, the equity curve with its drawdown and the trades back; a cancelled backtest ends
cancelled; bad payloads and grids are 422."""

from __future__ import annotations

import os
import time

import pytest

from tests.integration.test_jobs import FAST, Worker


@pytest.fixture
def worker(api, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")
           and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(REDIS_URL=api.common.redis_url, DATABASE_URL=api.db_url, AITRADER_HOME=str(tmp_path), **FAST)
    w = Worker(env, "bt", tmp_path / "worker.log")
    w.wait_ready()
    yield w
    w.stop()


def _final(api, headers, job_id: int, timeout: float = 90) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = api.client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not done in {timeout}s: {job}")


def test_backtests_run_as_jobs_and_read_back(api, worker):
    trader, viewer = api.headers("trader"), api.headers("viewer")
    assert api.client.post("/backtests", json={"synthetic": 5000}, headers=viewer).status_code == 403
    for bad in ({}, {"synthetic": 10, "files": ["x.csv"]}, {"synthetic": 10, "config": {"lower": 1}},
                {"synthetic": 10, "nope": 1}):
        r = api.client.post("/backtests", json=bad, headers=trader)
        assert r.status_code == 422, (bad, r.text)

    r = api.client.post("/backtests", json={"synthetic": 20_000, "label": "one"}, headers=trader)
    assert r.status_code == 202, r.text
    job = _final(api, trader, r.json()["id"])
    assert job["status"] == "completed" and job["progress"] == 1.0, job
    bt_id = job["result"]["backtest_id"]
    bt = api.client.get(f"/backtests/{bt_id}", headers=viewer).json()
    assert bt["status"] == "completed" and bt["job_id"] == job["id"] and bt["label"] == "one"
    assert bt["ticks"] == 20_000 and bt["fills"] > 0 and bt["created_by"] == "api:trader"
    assert {"total_return", "sharpe", "max_drawdown", "var_95"} <= set(bt["metrics"])
    curve = api.client.get(f"/backtests/{bt_id}/equity", params={"max_points": 50}, headers=viewer).json()
    assert curve["points"] >= len(curve["series"]) and 2 <= len(curve["series"]) <= 51
    assert all(p["drawdown"] <= 0 for p in curve["series"])
    assert min(p["drawdown"] for p in curve["series"]) >= -abs(bt["metrics"]["max_drawdown"]) - 1e-9  # thinned
    tr = api.client.get(f"/backtests/{bt_id}/trades", params={"limit": 5}, headers=viewer).json()
    assert len(tr) == 5 and {t["side"] for t in tr} <= {"BUY", "SELL"} and tr == sorted(tr, key=lambda t: t["ts"])

    # a sweep: one job per point under a sweep row; each result differs by the setting it tried
    grid = {"AITRADER_SE_FEE_BUFFER_BPS": [5, 50]}
    r = api.client.post("/backtests/sweep", json={"base": {"synthetic": 10_000, "label": "s"}, "grid": grid},
                        headers=trader)
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert len(sweep["jobs"]) == 2 and {j["parent_id"] for j in sweep["jobs"]} == {sweep["sweep_id"]}
    parent = api.client.get(f"/jobs/{sweep['sweep_id']}", headers=viewer).json()
    assert parent["type"] == "sweep" and parent["result"] == {"jobs": [j["id"] for j in sweep["jobs"]]}
    done = [_final(api, trader, j["id"]) for j in sweep["jobs"]]
    assert [d["status"] for d in done] == ["completed", "completed"], done
    labels = sorted(api.client.get(f"/backtests/{d['result']['backtest_id']}", headers=viewer).json()["label"]
                    for d in done)
    assert labels == ["s AITRADER_SE_FEE_BUFFER_BPS=5", "s AITRADER_SE_FEE_BUFFER_BPS=50"]
    big = {"base": {"synthetic": 10}, "grid": {f"AITRADER_SE_X{i}": [1, 2] for i in range(8)}}  # 256 is the cap
    big["grid"]["AITRADER_SE_X0"] = [1, 2, 3]
    assert api.client.post("/backtests/sweep", json=big, headers=trader).status_code == 422

    # a long one cancelled while it runs: the job and its backtest row end cancelled
    r = api.client.post("/backtests", json={"synthetic": 5_000_000}, headers=trader)
    jid = r.json()["id"]
    end = time.monotonic() + 60
    while api.client.get(f"/jobs/{jid}", headers=trader).json()["progress"] <= 0 and time.monotonic() < end:
        time.sleep(0.1)
    assert api.client.post(f"/jobs/{jid}/cancel", headers=trader).json()["outcome"] == "requested"
    assert _final(api, trader, jid)["status"] == "cancelled"
    rows = api.client.get("/backtests", params={"status": "cancelled"}, headers=viewer).json()
    assert [b["job_id"] for b in rows] == [jid]
    assert api.client.get(f"/backtests/{rows[0]['id']}/equity", headers=viewer).status_code == 409
    assert api.client.get("/backtests/999999", headers=viewer).status_code == 404
