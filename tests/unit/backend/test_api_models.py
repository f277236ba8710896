"""``/models``: the registry over HTTP — viewer reads, admin-only promote / retire, 404 / 409 / 422 answers."""

from __future__ import annotations

import pytest

from common.db import make_engine
from pattern_engine.ml.registry import ModelRegistry
from tests.onnx_models import make_bundle
from tests.sql import sql_rows


@pytest.fixture
def models_api(make_api, clean_env, tmp_path):
    """The API with a store under tmp_path holding mom@1, mom@2 and rev@1 (all registered)."""
    store = tmp_path / "store"
    clean_env.setenv("AITRADER_MODEL_STORE", str(store))
    api = make_api()
    assert api.common.model_store_dir == store
    eng = make_engine(api.db_url)
    try:
        reg = ModelRegistry(eng, store)
        b = make_bundle(tmp_path / "b", name="mom")
        reg.register(b, "ann", "first")
        reg.register(b, "ann")
        reg.register(make_bundle(tmp_path / "r", name="rev"), "ann")
    finally:
        eng.dispose()
    return api


def _audit_count(api) -> int:
    return sql_rows(api.db_url, "SELECT count(*) FROM audit_log")[0][0]


def test_viewer_lists_and_reads_models(models_api):
    api, h = models_api, models_api.headers("viewer")
    r = api.client.get("/models", headers=h)
    assert r.status_code == 200, r.text
    assert [(m["name"], m["version"], m["state"]) for m in r.json()] == [
        ("mom", 1, "registered"), ("mom", 2, "registered"), ("rev", 1, "registered")]
    assert "metadata" not in r.json()[0] and r.json()[0]["reason"] == "first"
    assert [m["version"] for m in api.client.get("/models?name=mom", headers=h).json()] == [1, 2]
    assert api.client.get("/models?state=promoted", headers=h).json() == []
    r = api.client.get("/models/mom/2", headers=h)
    assert r.status_code == 200
    body = r.json()
    assert body["metadata"]["version"] == "2" and body["path"] == "mom/2" and body["created_by"] == "ann"
    assert body["onnx_sha256"] == body["metadata"]["onnx_sha256"]


@pytest.mark.parametrize("url, status, words", [
    ("/models/mom/9", 404, "has no version 9 (versions: 1, 2)"),
    ("/models/ghost/1", 404, "no model named 'ghost'"),
    ("/models/mom/0", 422, "version"),
    ("/models/mom/one", 422, "version"),
    ("/models/9bad/1", 422, "name"),
    ("/models?state=live", 422, "state"),
    ("/models?name=a%20b", 422, "name"),
])
def test_unknown_models_are_404_and_bad_ids_422(models_api, url, status, words):
    r = models_api.client.get(url, headers=models_api.headers("viewer"))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and err["code"] == ("not_found" if status == 404 else "validation_error")


def test_promote_and_retire_are_admin_only_and_nothing_changes_below_admin(models_api):
    api = models_api
    for role in ("viewer", "trader"):
        for action in ("promote", "retire"):
            r = api.client.post(f"/models/mom/1/{action}", json={"reason": "try"}, headers=api.headers(role))
            assert r.status_code == 403, r.text
            assert "admin" in r.json()["error"]["message"]
    assert [m["state"] for m in api.client.get("/models", headers=api.headers("viewer")).json()] == ["registered"] * 3
    assert _audit_count(api) == 3  # the three registrations only


def test_admin_promotes_replaces_and_retires_with_audit_rows(models_api):
    api, h = models_api, models_api.headers("admin")
    r = api.client.post("/models/mom/1/promote", json={"reason": "go live"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["changed"] and r.json()["previous_state"] == "registered" and r.json()["replaced"] is None
    assert r.json()["model"]["promoted_by"] == "api:admin" and r.json()["model"]["reason"] == "go live"
    r = api.client.post("/models/mom/2/promote", json={"reason": "better"}, headers=h)
    assert r.status_code == 200
    assert (r.json()["model"]["state"], r.json()["replaced"]["version"], r.json()["replaced"]["state"]) == (
        "promoted", 1, "registered")
    again = api.client.post("/models/mom/2/promote", json={"reason": "again"}, headers=h)
    assert again.status_code == 200 and again.json()["changed"] is False
    r = api.client.post("/models/mom/2/retire", json={"reason": "drifted"}, headers=h)
    assert r.status_code == 200 and r.json()["previous_state"] == "promoted"
    assert api.client.get("/models?state=promoted", headers=h).json() == []
    r = api.client.post("/models/mom/2/promote", json={"reason": "undo"}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert "retired and cannot be promoted" in r.json()["error"]["message"]
    rows = sql_rows(api.db_url, "SELECT actor, action, entity_id FROM audit_log WHERE actor = 'api:admin' ORDER BY id")
    assert [tuple(r) for r in rows] == [("api:admin", "model.promote", "mom@1"), ("api:admin", "model.demote", "mom@1"),
                                        ("api:admin", "model.promote", "mom@2"), ("api:admin", "model.retire", "mom@2")]


@pytest.mark.parametrize("body", [None, {}, {"reason": ""}, {"reason": "   "}, {"reason": "x\x00y"},
                                  {"reason": "x" * 501}, {"reason": "ok", "extra": 1}, {"reason": 5}])
def test_a_change_needs_a_proper_reason_body(models_api, body):
    r = models_api.client.post("/models/mom/1/promote", json=body, headers=models_api.headers("admin"))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert _audit_count(models_api) == 3


def test_admin_changes_to_unknown_models_are_404(models_api):
    h = models_api.headers("admin")
    for url in ("/models/mom/3/promote", "/models/ghost/1/retire"):
        r = models_api.client.post(url, json={"reason": "x"}, headers=h)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
