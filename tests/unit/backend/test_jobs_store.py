"""The job row's transitions are conditional: a task the row does not name, a second claim, a finish by a run
that lost the row, a reaper racing a late heartbeat: each loser's update matches nothing."""

from __future__ import annotations

import time

from backend.jobs import store
from common.db import make_engine, migrate


def test_only_the_run_the_row_names_can_claim_renew_and_finish(database_url):
    migrate(database_url)
    eng = make_engine(database_url)
    try:
        job = store.create(eng, "train", {"x": 1}, "t", "task-a")
        assert not store.claim(eng, job, "task-other", "w1")  # a stale or foreign task
        assert store.claim(eng, job, "task-a", "w1")
        assert not store.claim(eng, job, "task-a", "w2")  # a redelivery of the same task
        assert store.renew(eng, job, "task-a", "w1", 0.5, "half") is False
        assert store.renew(eng, job, "task-a", "w2") is None  # not w2's run
        assert not store.finish(eng, job, "task-a", "w2", "completed", result={})
        assert store.request_cancel(eng, job, "boss")[0] == "requested"
        assert store.renew(eng, job, "task-a", "w1") is True  # the run sees the cancel at its next beat

        # the lease lapses: the reaper re-queues it under a new task; the old run can no longer touch the row
        time.sleep(0.05)
        cutoff, rows = store.expired(eng, 0.01)
        assert [r["id"] for r in rows] == [job]
        assert store.requeue(eng, rows[0], cutoff, "task-b", "re-queued")
        assert not store.requeue(eng, rows[0], cutoff, "task-c", "twice")  # a second reaper loses
        assert store.renew(eng, job, "task-a", "w1") is None
        assert not store.finish(eng, job, "task-a", "w1", "completed", result={})
        assert store.claim(eng, job, "task-b", "w2")
        assert store.finish(eng, job, "task-b", "w2", "completed", result={"ok": True})
        row = store.get(eng, job)
        assert row["status"] == "completed" and row["attempts"] == 2 and row["worker"] == "w2"
        assert store.request_cancel(eng, job, "boss")[0] == "finished"
    finally:
        eng.dispose()
