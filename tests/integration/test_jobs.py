"""Jobs on the task queue with real Celery worker processes, the test Redis db and a real database: a job
runs to completed (progress and result on the row) or failed (its error); a queued job is cancelled at once,
a running one at its next check point; a worker SIGKILLed mid-job leaves the job re-queued and completed by
another worker, or failed when no attempt is left, never 'running'."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from backend.jobs import JobQueue, JobSettings, cancel, load_job_types, reap, submit
from backend.jobs import store as job_store
from common.config import CommonSettings
from common.db import make_engine, migrate

from .harness import ROOT

pytestmark = pytest.mark.integration

# short leases so a lost worker is noticed within seconds, yet long enough that a live worker on a loaded
# 2-core machine never misses one
HEARTBEAT_S, LEASE_S = 0.5, 3.0
FAST = {"AITRADER_JOBS_HEARTBEAT_S": str(HEARTBEAT_S), "AITRADER_JOBS_LEASE_S": str(LEASE_S),
        "AITRADER_JOBS_REAP_INTERVAL_S": "0.5"}
TYPES = "tests.integration.job_types"


class Worker:
    """``python -m backend.jobs.worker`` in its own process group (so a kill takes its pool children too)."""

    def __init__(self, env: dict[str, str], name: str, log: Path) -> None:
        self.name, self.log = name, log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend.jobs.worker", "--concurrency", "1"], cwd=ROOT,
            env={**env, "AITRADER_INSTANCE": name}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if f"jobs@{self.name} ready." in self.log.read_text(errors="replace"):
                return
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Env:
    def __init__(self, redis_url: str, db_url: str, tmp: Path) -> None:
        self.db_url, self.tmp = db_url, tmp
        self.common = CommonSettings(redis_url=redis_url, database_url=db_url, home=tmp)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")
                    and k not in ("REDIS_URL", "DATABASE_URL")}
        self.env.update(REDIS_URL=redis_url, DATABASE_URL=db_url, AITRADER_HOME=str(tmp),
                        AITRADER_JOBS_EXTRA_MODULES=TYPES, **FAST)
        self.engine = make_engine(db_url)
        self.queue = JobQueue(self.common, JobSettings(extra_modules=TYPES, heartbeat_s=HEARTBEAT_S, lease_s=LEASE_S))
        self.workers: list[Worker] = []
        load_job_types([TYPES])

    def worker(self, name: str, **env: str) -> Worker:
        w = Worker({**self.env, **env}, name, self.tmp / f"worker-{name}.log")
        self.workers.append(w)
        w.wait_ready()
        return w

    def submit(self, kind: str, payload: dict[str, Any], actor: str = "test") -> int:
        return submit(self.engine, kind, payload, actor, queue=self.queue)

    def row(self, job_id: int) -> dict[str, Any]:
        row = job_store.get(self.engine, job_id)
        assert row is not None
        return row

    def wait(self, job_id: int, until: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            row = self.row(job_id)
            if until(row):
                return row
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} stuck: {self.row(job_id)}")

    def final(self, job_id: int, timeout: float = 30) -> dict[str, Any]:
        return self.wait(job_id, lambda r: r["status"] in ("completed", "failed", "cancelled"), timeout)


@pytest.fixture
def jobs_env(redis_url: str, database_url: str, tmp_path: Path) -> Iterator[Env]:
    migrate(database_url)
    env = Env(redis_url, database_url, tmp_path)
    yield env
    for w in env.workers:
        w.stop()
    env.queue.close()
    env.engine.dispose()


def test_jobs_run_to_completed_with_progress_and_result_or_failed_with_the_error(jobs_env):
    jobs_env.worker("w1")
    ok = jobs_env.submit("steps", {"steps": 6, "step_s": 0.15})
    running = jobs_env.wait(ok, lambda r: r["status"] == "running" and r["progress"] > 0)
    assert 0 < running["progress"] < 1 and running["progress_note"].startswith("step ")
    assert running["worker"].startswith("jobs@w1:") and running["heartbeat_at"] is not None
    done = jobs_env.final(ok)
    assert done["status"] == "completed", f"{done}"
    assert done["result"] == {"steps": 6, "attempt": 1} and done["progress"] == 1.0 and done["error"] == ""
    assert done["attempts"] == 1 and done["finished_at"] >= done["started_at"]

    bad = jobs_env.final(jobs_env.submit("steps", {"steps": 3, "step_s": 0.05, "fail_at": 1}))
    assert bad["status"] == "failed" and bad["error"] == "RuntimeError: boom at step 1", bad
    assert bad["result"] is None and bad["progress_note"] == "step 2 of 3"

    # the shipped types on the same worker: a model trained like `aitrader model train --synthetic`
    out = jobs_env.tmp / "bundle"
    trained = jobs_env.final(jobs_env.submit("train", {"synthetic": 20000, "horizon": 20, "out": str(out)}), 90)
    assert trained["status"] == "completed", trained
    assert trained["result"]["bundle"] == str(out) and (out / "model.onnx").is_file()
    assert trained["result"]["name"] == "mlp_h20" and "accuracy" in trained["result"]["summary"]
    # a suggestion: no broker listens here, so it fails on the account context, its run row tied to the job
    sug = jobs_env.final(jobs_env.submit("suggestion", {"prompt": "scan my portfolio", "provider": "offline"}))
    assert sug["status"] == "failed" and sug["error"].startswith("account context unavailable"), sug
    with jobs_env.engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM suggestions WHERE job_id = :j"), {"j": sug["id"]}).scalar() == 1
        audit = c.execute(sa.text("SELECT count(*) FROM audit_log WHERE action = 'job.submit'")).scalar()
    assert audit == 4


def test_cancel_a_queued_job_at_once_and_a_running_one_at_its_next_check_point(jobs_env):
    jobs_env.worker("w1")  # one job at a time: the second waits queued behind the first
    first = jobs_env.submit("steps", {"steps": 200, "step_s": 0.05}, actor="alice")
    jobs_env.wait(first, lambda r: r["status"] == "running" and r["progress"] > 0)
    second = jobs_env.submit("steps", {"steps": 1, "step_s": 0}, actor="alice")
    time.sleep(0.5)
    assert jobs_env.row(second)["status"] == "queued"

    outcome, row = cancel(jobs_env.engine, second, "bob", queue=jobs_env.queue)
    assert outcome == "cancelled" and row["status"] == "cancelled" and "bob" in row["error"]
    outcome, row = cancel(jobs_env.engine, first, "bob", queue=jobs_env.queue)
    assert outcome == "requested" and row["status"] == "running" and row["cancel_requested"]
    stopped = jobs_env.final(first, 10)
    assert stopped["status"] == "cancelled" and stopped["progress"] < 1, stopped
    # the cancelled job's task, revoked or delivered, never runs it
    time.sleep(1.0)
    second_row = jobs_env.row(second)
    assert second_row["status"] == "cancelled" and second_row["attempts"] == 0 and second_row["started_at"] is None
    with jobs_env.engine.connect() as c:
        rows = c.execute(sa.text("SELECT entity_id, actor FROM audit_log WHERE action = 'job.cancel' "
                                 "ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(str(second), "bob"), (str(first), "bob")]


def _kill_mid_job(jobs_env: Env, worker: Worker, steps: int = 12) -> int:
    job = jobs_env.submit("steps", {"steps": steps, "step_s": 0.25})
    jobs_env.wait(job, lambda r: r["status"] == "running" and r["progress"] >= 2 / steps)
    worker.kill()
    assert jobs_env.row(job)["status"] == "running"  # nobody has noticed yet
    return job


def test_a_worker_killed_mid_job_gets_its_job_requeued_and_completed_by_another(jobs_env):
    w1 = jobs_env.worker("w1", AITRADER_JOBS_MAX_ATTEMPTS="2")
    job = _kill_mid_job(jobs_env, w1)
    jobs_env.worker("w2", AITRADER_JOBS_MAX_ATTEMPTS="2")  # its reaper finds the lapsed lease
    seen: set[str] = set()

    def ended(r: dict[str, Any]) -> bool:
        seen.add(r["status"])
        return r["status"] in ("completed", "failed", "cancelled")

    done = jobs_env.wait(job, ended, 30)
    assert done["status"] == "completed", f"{done}"
    assert done["attempts"] == 2 and done["worker"].startswith("jobs@w2:") and done["result"]["attempt"] == 2
    assert "queued" in seen or done["progress_note"] == "completed"


def test_a_worker_killed_mid_job_leaves_it_failed_when_no_attempt_is_left(jobs_env):
    w1 = jobs_env.worker("w1")  # max_attempts 1 (the default)
    job = _kill_mid_job(jobs_env, w1)
    assert reap(jobs_env.engine, queue=jobs_env.queue) == []  # the lease has not lapsed yet
    time.sleep(LEASE_S + 0.1)
    acted = reap(jobs_env.engine, queue=jobs_env.queue)
    assert [(a["id"], a["action"]) for a in acted] == [(job, "failed")]
    row = jobs_env.row(job)
    assert row["status"] == "failed" and "worker jobs@w1:" in row["error"] and "lost" in row["error"], row
    assert "attempt 1 of 1" in row["error"] and row["finished_at"] is not None
    assert reap(jobs_env.engine, queue=jobs_env.queue) == []  # once


def test_a_worker_serves_metrics_counting_its_job_rows_and_the_queue(jobs_env):
    from prometheus_client.parser import text_string_to_metric_families

    from .harness import free_port

    port = free_port()
    jobs_env.worker("w1", AITRADER_JOBS_METRICS_PORT=str(port))
    first = jobs_env.submit("steps", {"steps": 4, "step_s": 0.2})  # holds the one slot: the next two wait
    jobs_env.wait(first, lambda r: r["status"] == "running")
    ok, bad = (jobs_env.submit("steps", {"steps": 1, "step_s": 0}),
               jobs_env.submit("steps", {"steps": 2, "step_s": 0, "fail_at": 0}))

    def scrape() -> dict[tuple[str, frozenset], float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    m = scrape()
    assert m[("aitrader_jobs_worker_jobs", frozenset({"worker": "jobs@w1", "status": "running", "kind": "steps"}.items()))] == 1
    assert m[("aitrader_jobs_queue_depth", frozenset({"queue": "aitrader.jobs"}.items()))] >= 1  # one may be prefetched
    assert m[("aitrader_jobs_database_up", frozenset())] == 1 and m[("aitrader_jobs_redis_up", frozenset())] == 1
    for j in (first, ok, bad):
        jobs_env.final(j)
    m = scrape()
    done = {k: m[("aitrader_jobs_worker_jobs", frozenset({"worker": "jobs@w1", "status": k, "kind": "steps"}.items()))]
            for k in ("completed", "failed")}
    assert done == {"completed": 2, "failed": 1}
    assert ("aitrader_jobs_worker_jobs", frozenset({"worker": "jobs@w1", "status": "running", "kind": "steps"}.items())) not in m
    assert m[("aitrader_jobs_queue_depth", frozenset({"queue": "aitrader.jobs"}.items()))] == 0
