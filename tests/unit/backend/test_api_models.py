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


def test_admin_deletes_a_version_but_not_the_promoted_one(models_api):
    api, h = models_api, models_api.headers("admin")
    assert api.client.post("/models/mom/1/promote", json={"reason": "live"}, headers=h).status_code == 200
    for who in ("viewer", "trader"):
        assert api.client.delete("/models/mom/2?reason=x", headers=api.headers(who)).status_code == 403
    r = api.client.delete("/models/mom/1?reason=disk", headers=h)
    assert r.status_code == 409 and "is promoted" in r.json()["error"]["message"]
    assert api.client.delete("/models/mom/2", headers=h).status_code == 422  # no reason
    r = api.client.delete("/models/mom/2", params={"reason": "disk full"}, headers=h)
    assert r.status_code == 200 and r.json()["model"]["state"] == "deleted" and r.json()["previous_state"] == "registered"
    assert [m["version"] for m in api.client.get("/models", params={"name": "mom"}, headers=h).json()] == [1]
    assert [m["version"] for m in api.client.get("/models", params={"state": "deleted"}, headers=h).json()] == [2]
    assert sql_rows(api.db_url, "SELECT action, entity_id FROM audit_log WHERE action = 'model.delete'") == [
        ("model.delete", "mom@2")]


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


# --- POST /models: uploads -------------------------------------------------------------------------------
FEATS = "ret,vol,zscore,qimb"


def _upload(api, role: str, filename: str, data: bytes, **form):
    fields = {"name": "up", "features": FEATS, "reason": "uploaded in a test", **form}
    return api.client.post("/models", files={"file": (filename, data)}, data=fields, headers=api.headers(role))


def test_admin_uploads_an_onnx_model_which_is_registered_checked_and_promoted(models_api):
    from tests.onnx_models import mlp_onnx

    data = mlp_onnx(4, 3)
    for role in ("viewer", "trader"):
        assert _upload(models_api, role, "m.onnx", data).status_code == 403
    r = _upload(models_api, "admin", "m.onnx", data, promote="true")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["promoted"] is True
    assert (body["model"]["name"], body["model"]["version"], body["model"]["state"]) == ("up", 1, "promoted")
    assert body["model"]["features"] == FEATS.split(",") and body["model"]["kind"] == "onnx-import"
    listed = models_api.client.get("/models?name=up", headers=models_api.headers("viewer")).json()
    assert [(m["version"], m["state"]) for m in listed] == [(1, "promoted")]
    actors = sql_rows(models_api.db_url, "SELECT DISTINCT actor FROM audit_log WHERE entity_id = 'up@1'")
    assert actors == [("api:admin",)]


@pytest.mark.parametrize("filename, data, form, status, words", [
    ("m.onnx", b"\x00not onnx", {}, 422, "onnx"),
    ("m.txt", b"x", {}, 422, "unsupported model file"),
    ("m.pkl", b"x", {}, 403, "AITRADER_API_ALLOW_PICKLE_UPLOADS"),
    ("m.pt", b"x", {}, 403, "run code"),
    ("m.onnx", None, {"features": "ret,vol"}, 422, "width"),  # the graph takes 4 columns
    ("m.onnx", None, {"features": "ret,nosuch,zscore,qimb"}, 422, "nosuch"),
    ("m.onnx", None, {"classes": "1,2"}, 422, "classes"),
])
def test_bad_uploads_get_a_clear_4xx_and_register_nothing(models_api, filename, data, form, status, words):
    from tests.onnx_models import mlp_onnx

    before = models_api.client.get("/models", headers=models_api.headers("viewer")).json()
    r = _upload(models_api, "admin", filename, data if data is not None else mlp_onnx(4, 3), **form)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]
    assert models_api.client.get("/models", headers=models_api.headers("viewer")).json() == before


def test_an_upload_over_the_size_limit_is_413(make_api, clean_env, tmp_path):
    clean_env.setenv("AITRADER_MODEL_STORE", str(tmp_path / "store"))
    clean_env.setenv("AITRADER_API_MODEL_UPLOAD_MAX_MB", "1")
    api = make_api()
    r = _upload(api, "admin", "m.onnx", b"\x00" * (1 << 20 | 1))
    assert r.status_code == 413 and "1 MiB" in r.json()["error"]["message"]


def test_pickled_models_upload_only_when_allowed(make_api, clean_env, tmp_path):
    import pickle

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    clean_env.setenv("AITRADER_MODEL_STORE", str(tmp_path / "store"))
    clean_env.setenv("AITRADER_API_ALLOW_PICKLE_UPLOADS", "true")
    api = make_api()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    clf = LogisticRegression().fit(x, np.where(x[:, 0] > 0, 1, -1))
    r = _upload(api, "admin", "m.pkl", pickle.dumps(clf))
    assert r.status_code == 201, r.text
    assert r.json()["model"]["state"] == "registered" and r.json()["promoted"] is False
