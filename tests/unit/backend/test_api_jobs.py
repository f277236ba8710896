"""``/jobs`` through the API on the test database and Redis db (no worker runs here: queued jobs stay queued):
the role per job type, 422 for an unknown type or a bad payload, cancel rules (own job: trader; another's:
admin; 409 once ended; 404 unknown), the task on the queue and the audit rows."""

from __future__ import annotations

import redis

from tests.sql import sql_rows

SUGGEST = {"type": "suggestion", "payload": {"prompt": "scan my portfolio"}}
TRAIN = {"type": "train", "payload": {"synthetic": 1000, "horizon": 5, "out": "/tmp/nowhere"}}


def test_queue_read_and_cancel_jobs_with_the_roles_each_needs(api):
    trader, admin, viewer = api.headers("trader"), api.headers("admin"), api.headers("viewer")
    r = api.client.post("/jobs", json=SUGGEST, headers=trader)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["created_by"] == "api:trader" and len(job["task_id"]) == 32
    assert job["payload"] == {"prompt": "scan my portfolio", "provider": None} and job["attempts"] == 0
    # the task is on the queue, under the task queue's own key prefix
    rd = redis.Redis.from_url(api.common.redis_url)
    try:
        assert rd.llen("jobs:aitrader.jobs") == 1
        assert not [k for k in rd.keys("*") if not k.startswith(b"jobs:")]
    finally:
        rd.close()

    r = api.client.post("/jobs", json=TRAIN, headers=trader)
    assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
    assert api.client.post("/jobs", json=SUGGEST, headers=viewer).status_code == 403
    trained = api.client.post("/jobs", json=TRAIN, headers=admin)
    assert trained.status_code == 202 and trained.json()["type"] == "train"

    r = api.client.post("/jobs", json={"type": "nosuch", "payload": {}}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_job_type"
    for bad in ({"type": "suggestion", "payload": {}}, {"type": "suggestion", "payload": {"prompt": "x", "y": 1}},
                {"type": "train", "payload": {"horizon": 5, "out": "x"}},
                {"type": "train", "payload": {"horizon": 5, "out": "x", "synthetic": 5, "data": ["f.csv"]}}):
        r = api.client.post("/jobs", json=bad, headers=admin)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_payload", (bad, r.text)

    listed = api.client.get("/jobs", params={"type": "suggestion"}, headers=viewer).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert [j["id"] for j in api.client.get("/jobs", params={"status": "queued"}, headers=viewer).json()] == [
        trained.json()["id"], job["id"]]
    assert api.client.get(f"/jobs/{job['id']}", headers=viewer).json()["status"] == "queued"
    assert api.client.get("/jobs/999999", headers=viewer).status_code == 404

    # another user's job: trader no, admin yes; then it has ended: 409
    r = api.client.post(f"/jobs/{trained.json()['id']}/cancel", headers=trader)
    assert r.status_code == 403, r.text
    r = api.client.post(f"/jobs/{job['id']}/cancel", headers=trader)
    assert r.status_code == 200 and r.json()["outcome"] == "cancelled" and r.json()["job"]["status"] == "cancelled"
    r = api.client.post(f"/jobs/{job['id']}/cancel", headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_finished"
    assert api.client.post(f"/jobs/{trained.json()['id']}/cancel", headers=admin).json()["outcome"] == "cancelled"
    assert api.client.post("/jobs/999999/cancel", headers=admin).status_code == 404

    assert sql_rows(api.db_url, "SELECT action, actor, entity_id FROM audit_log WHERE entity = 'job' ORDER BY id") == [
        ("job.submit", "api:trader", str(job["id"])), ("job.submit", "api:admin", str(trained.json()["id"])),
        ("job.cancel", "api:trader", str(job["id"])), ("job.cancel", "api:admin", str(trained.json()["id"]))]
