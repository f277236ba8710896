"""The model registry: register / promote / retire / list / resolve, one promoted version per name (code and
partial unique index), bad bundles refused with nothing recorded, audit rows, concurrency; ``aitrader model``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from onnx import TensorProto, helper, numpy_helper

from backend.cli import main
from common import db
from pattern_engine.ml.metadata import (
    BUNDLE_META,
    BUNDLE_ONNX,
    ModelMetadata,
    load_bundle,
    onnx_sha256,
    save_bundle,
)
from pattern_engine.ml.registry import (
    InvalidModel,
    ModelNotFound,
    ModelRegistry,
    RegistryError,
    StateConflict,
    check_bundle,
    parse_ref,
)
from tests.onnx_models import DEFAULT_FEATURES, make_bundle
from tests.sql import sql_rows

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture
def reg(database_url, tmp_path):
    db.migrate(database_url)
    eng = db.make_engine(database_url)
    yield ModelRegistry(eng, tmp_path / "store")
    eng.dispose()


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle", name="mom", seed=1)


def audit(url: str) -> list[tuple]:
    return [tuple(r) for r in sql_rows(url, "SELECT actor, action, entity, entity_id FROM audit_log ORDER BY id")]


def last_detail(url: str) -> dict:
    (detail,), = sql_rows(url, "SELECT detail FROM audit_log ORDER BY id DESC LIMIT 1")
    return json.loads(detail) if isinstance(detail, str) else detail  # SQLite: text; PostgreSQL: json


def store_files(reg: ModelRegistry) -> list[str]:
    return sorted(str(p.relative_to(reg.store)) for p in reg.store.rglob("*")) if reg.store.exists() else []


def graph_bundle(directory: Path, nodes, inits, n_out: int = 3, name: str = "odd", classes=(-1, 0, 1)) -> Path:
    """A bundle whose graph is ``nodes`` from ``input`` [N, 11] to ``probabilities`` [N, n_out]."""
    n_in = len(DEFAULT_FEATURES)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_in])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_out])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(name=name, version="dev", features=list(DEFAULT_FEATURES), mean=[0.0] * n_in,
                         scale=[1.0] * n_in, classes=list(classes))
    return save_bundle(directory, meta, model.SerializeToString())


def gemm(n_out: int, w: float = 0.5, out: str = "logits") -> tuple[list, list]:
    n_in = len(DEFAULT_FEATURES)
    inits = [numpy_helper.from_array(np.full((n_in, n_out), w, np.float32), "W"),
             numpy_helper.from_array(np.arange(n_out, dtype=np.float32), "B")]
    return [helper.make_node("Gemm", ["input", "W", "B"], [out])], inits


# -- register ---------------------------------------------------------------------------------------
def test_register_numbers_versions_per_name_and_rewrites_the_copys_version_keeping_the_sha(reg, bundle, tmp_path):
    original = (bundle / BUNDLE_META).read_text()
    src_meta, _ = load_bundle(bundle)
    r1 = reg.register(bundle, "ann", "first fit")
    r2 = reg.register(bundle, "bob")
    other = reg.register(make_bundle(tmp_path / "b2", name="rev", seed=2), "ann")
    assert [(r.name, r.version, r.state) for r in (r1, r2, other)] == [
        ("mom", 1, "registered"), ("mom", 2, "registered"), ("rev", 1, "registered")]
    assert r1.path == "mom/1" and reg.bundle_dir(r2) == reg.store / "mom" / "2"
    meta, onnx_path = load_bundle(reg.bundle_dir(r2))  # verifies the sha256 of the copy
    assert meta.version == "2" and meta.name == "mom"
    assert meta.onnx_sha256 == src_meta.onnx_sha256 == onnx_sha256(onnx_path) == r2.onnx_sha256
    assert meta.model_copy(update={"version": src_meta.version}) == src_meta  # nothing else changed
    assert (bundle / BUNDLE_META).read_text() == original  # the source bundle is untouched
    assert r2.metadata == meta.dump() and r2.features == list(DEFAULT_FEATURES) and r2.kind == "test-mlp"
    assert r1.created_by == "ann" and r1.reason == "first fit" and r1.created_at is not None
    assert reg.get("mom", 1) == r1
    assert store_files(reg) == ["mom", "mom/1", "mom/1/model.json", "mom/1/model.onnx", "mom/2",
                                "mom/2/model.json", "mom/2/model.onnx", "rev", "rev/1", "rev/1/model.json",
                                "rev/1/model.onnx"]
    assert audit(reg.engine.url.render_as_string(hide_password=False)) == [
        ("ann", "model.register", "model", "mom@1"), ("bob", "model.register", "model", "mom@2"),
        ("ann", "model.register", "model", "rev@1")]


def test_register_fills_in_a_missing_sha_and_keeps_extra_files(reg, tmp_path):
    b = make_bundle(tmp_path / "b", name="nosha")
    raw = json.loads((b / BUNDLE_META).read_text())
    raw["onnx_sha256"] = ""
    (b / BUNDLE_META).write_text(json.dumps(raw))
    (b / "report.md").write_text("notes")
    rec = reg.register(b, "ann")
    meta, onnx_path = load_bundle(reg.bundle_dir(rec))
    assert meta.onnx_sha256 == onnx_sha256(onnx_path) == rec.onnx_sha256 != ""
    assert (reg.bundle_dir(rec) / "report.md").read_text() == "notes"


def _corrupt_sha(d: Path) -> None:
    (d / BUNDLE_ONNX).write_bytes((d / BUNDLE_ONNX).read_bytes() + b"\0")


def _garbage_onnx(d: Path) -> None:
    (d / BUNDLE_ONNX).write_bytes(b"not an onnx model")
    raw = json.loads((d / BUNDLE_META).read_text())
    raw["onnx_sha256"] = onnx_sha256(d / BUNDLE_ONNX)
    (d / BUNDLE_META).write_text(json.dumps(raw))


def _two_classes_in_json(d: Path) -> None:  # the graph gives 3 columns
    raw = json.loads((d / BUNDLE_META).read_text())
    raw["classes"] = [-1, 1]
    (d / BUNDLE_META).write_text(json.dumps(raw))


def _wrong_input_name(d: Path) -> None:
    raw = json.loads((d / BUNDLE_META).read_text())
    raw["input_name"] = "x"
    (d / BUNDLE_META).write_text(json.dumps(raw))


@pytest.mark.parametrize("spoil, message", [
    (lambda d: (d / BUNDLE_ONNX).unlink(), "model.onnx: missing"),
    (lambda d: (d / BUNDLE_META).write_text("{"), "invalid JSON"),
    (_corrupt_sha, "sha256 does not match"),
    (_garbage_onnx, "not a valid ONNX model"),
    (_two_classes_in_json, "model.json lists 2 classes"),
    (_wrong_input_name, "model.json says one input named"),
])
def test_a_bad_bundle_is_refused_and_nothing_is_recorded_or_stored(reg, bundle, spoil, message):
    spoil(bundle)
    with pytest.raises(InvalidModel) as e:
        reg.register(bundle, "ann")
    assert message in str(e.value)
    assert reg.list() == [] and store_files(reg) == []
    assert audit(reg.engine.url.render_as_string(hide_password=False)) == []


def test_outputs_that_are_not_probabilities_are_refused(reg, tmp_path):
    nodes, inits = gemm(3, out="probabilities")  # logits, no softmax
    with pytest.raises(InvalidModel, match="not class probabilities"):
        reg.register(graph_bundle(tmp_path / "logits", nodes, inits), "ann")
    nodes, inits = gemm(3, w=0.0)
    nodes.append(helper.make_node("Log", ["logits"], ["probabilities"]))  # log(0) = -inf in the first column
    with pytest.raises(InvalidModel, match="non-finite"):
        check_bundle(graph_bundle(tmp_path / "nan", nodes, inits))
    nodes, inits = gemm(3)
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    check_bundle(graph_bundle(tmp_path / "ok", nodes, inits))  # the same graph with a softmax passes
    assert reg.list() == [] and store_files(reg) == []


def test_register_needs_an_actor(reg, bundle):
    with pytest.raises(RegistryError, match="1-64 characters"):
        reg.register(bundle, "")
    assert reg.list() == []


# -- promote / retire ---------------------------------------------------------------------------
def test_one_promoted_version_per_name_the_previous_one_goes_back_to_registered(reg, bundle, tmp_path):
    for _ in range(3):
        reg.register(bundle, "ann")
    reg.register(make_bundle(tmp_path / "b2", name="rev"), "ann")
    t1 = reg.promote("mom", 1, "ann", "go live")
    assert t1.changed and t1.previous_state == "registered" and t1.replaced is None
    assert t1.record.state == "promoted" and t1.record.promoted_by == "ann" and t1.record.reason == "go live"
    assert reg.promote("rev", 1, "ann", "other name").changed  # names are independent
    t2 = reg.promote("mom", 3, "bob", "better sharpe")
    assert t2.record.state == "promoted" and t2.replaced is not None
    assert (t2.replaced.ref, t2.replaced.state, t2.replaced.reason) == ("mom@1", "registered", "better sharpe")
    assert t2.replaced.promoted_by == "ann"  # when it was last promoted is kept
    assert [(r.version, r.state) for r in reg.list(name="mom")] == [(1, "registered"), (2, "registered"),
                                                                     (3, "promoted")]
    assert reg.promoted("mom").version == 3 and reg.promoted("rev").version == 1 and reg.promoted("nope") is None
    assert [r.ref for r in reg.list(state="promoted")] == ["mom@3", "rev@1"]
    url = reg.engine.url.render_as_string(hide_password=False)
    assert audit(url)[-2:] == [("bob", "model.demote", "model", "mom@1"), ("bob", "model.promote", "model", "mom@3")]
    assert last_detail(url) == {"reason": "better sharpe", "from": "registered", "to": "promoted", "replaced": "mom@1"}
    # promoting the promoted version again changes nothing and writes nothing
    n = len(audit(url))
    again = reg.promote("mom", 3, "bob", "again")
    assert not again.changed and again.record.reason == "better sharpe" and len(audit(url)) == n


def test_retire_a_promoted_version_leaves_the_name_without_one_and_it_cannot_come_back(reg, bundle):
    reg.register(bundle, "ann")
    reg.register(bundle, "ann")
    reg.promote("mom", 2, "ann", "live")
    t = reg.retire("mom", 2, "bob", "drifted")
    assert t.changed and t.previous_state == "promoted"
    assert (t.record.state, t.record.retired_by, t.record.reason) == ("retired", "bob", "drifted")
    assert reg.promoted("mom") is None
    with pytest.raises(ModelNotFound, match=r"no promoted version \(versions: 1 registered, 2 retired\)"):
        reg.resolve("mom")
    with pytest.raises(StateConflict, match="register its bundle again"):
        reg.promote("mom", 2, "ann", "undo")
    assert not reg.retire("mom", 2, "bob", "twice").changed
    assert reg.retire("mom", 1, "bob", "never used").previous_state == "registered"
    back = reg.register(reg.bundle_dir(t.record), "ann", "bring back drifted v2")  # re-registration: a new version
    assert back.version == 3 and reg.promote("mom", 3, "ann", "back").changed
    url = reg.engine.url.render_as_string(hide_password=False)
    assert [a for _who, a, *_ in audit(url)] == ["model.register", "model.register", "model.promote", "model.retire",
                                                 "model.retire", "model.register", "model.promote"]


def test_delete_removes_the_files_keeps_the_row_and_never_reuses_the_number(reg, bundle):
    reg.register(bundle, "ann")
    reg.register(bundle, "ann")
    reg.promote("mom", 2, "ann", "live")
    with pytest.raises(StateConflict, match="is promoted"):
        reg.delete("mom", 2, "bob", "disk")
    assert reg.bundle_dir(reg.get("mom", 2)).is_dir()
    t = reg.delete("mom", 1, "bob", "disk full")
    assert t.changed and t.previous_state == "registered" and t.record.state == "deleted"
    assert not reg.bundle_dir(t.record).exists() and reg.bundle_dir(reg.get("mom", 2)).is_dir()
    assert not reg.delete("mom", 1, "bob", "again").changed
    assert [r.version for r in reg.list(name="mom")] == [2]  # deleted ones only when asked for
    assert [r.version for r in reg.list(state="deleted")] == [1]
    with pytest.raises(ModelNotFound, match="was deleted"):
        reg.resolve("mom@1")
    with pytest.raises(StateConflict, match="is deleted and cannot be promoted"):
        reg.promote("mom", 1, "ann", "undo")
    with pytest.raises(StateConflict, match="is deleted"):
        reg.retire("mom", 1, "ann", "undo")
    with pytest.raises(RegistryError, match="reason"):
        reg.delete("mom", 2, "bob", " ")
    reg.retire("mom", 2, "bob", "drifted")
    assert reg.delete("mom", 2, "bob", "gone").previous_state == "retired"
    assert reg.register(bundle, "ann").version == 3  # 1 and 2 are never given out again
    url = reg.engine.url.render_as_string(hide_password=False)
    assert [a for _who, a, *_ in audit(url)][-4:] == ["model.delete", "model.retire", "model.delete", "model.register"]


def test_changes_need_a_reason_and_name_unknown_versions(reg, bundle):
    reg.register(bundle, "ann")
    with pytest.raises(RegistryError, match="reason is required"):
        reg.promote("mom", 1, "ann", "  ")
    with pytest.raises(ModelNotFound, match=r"model 'mom' has no version 7 \(versions: 1\)"):
        reg.promote("mom", 7, "ann", "x")
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        reg.retire("nope", 1, "ann", "x")
    with pytest.raises(ModelNotFound):
        reg.get("mom", 2)


def test_the_partial_unique_index_refuses_a_second_promoted_row(reg):
    row = {"state": "promoted", "onnx_sha256": "0" * 64, "kind": "", "features": ["ret"], "metrics": {},
           "metadata": {}, "created_by": "t", "reason": ""}
    models = db.Model.__table__
    with reg.engine.begin() as c:
        c.execute(models.insert(), [{**row, "name": "a", "version": 1, "path": "a/1"},
                                    {**row, "name": "b", "version": 1, "path": "b/1"},
                                    {**row, "name": "a", "version": 2, "path": "a/2", "state": "retired"}])
    with pytest.raises(sa.exc.IntegrityError), reg.engine.begin() as c:
        c.execute(models.insert(), {**row, "name": "a", "version": 3, "path": "a/3"})
    with pytest.raises(sa.exc.IntegrityError), reg.engine.begin() as c:  # (name, version) is unique
        c.execute(models.insert(), {**row, "name": "a", "version": 2, "path": "a/2x", "state": "registered"})
    with pytest.raises(sa.exc.IntegrityError), reg.engine.begin() as c:  # states are a closed set
        c.execute(models.insert(), {**row, "name": "c", "version": 1, "path": "c/1", "state": "live"})
    with pytest.raises(sa.exc.IntegrityError), reg.engine.begin() as c:  # an update cannot make a second one
        c.execute(models.update().where(models.c.name == "a", models.c.version == 2).values(state="promoted"))
    assert [r.ref for r in reg.list(state="promoted")] == ["a@1", "b@1"]


def test_concurrent_registers_and_promotes_never_share_a_version_or_the_promotion(reg, bundle):
    errors: list[BaseException] = []

    def run(fn, *a):
        try:
            fn(*a)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(reg.register, bundle, f"t{i}")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(r.version for r in reg.list(name="mom")) == [1, 2, 3, 4, 5, 6]
    assert store_files(reg) == sorted(["mom"] + [f"mom/{v}{f}" for v in range(1, 7)
                                                 for f in ("", "/model.json", "/model.onnx")])
    for r in reg.list():
        assert load_bundle(reg.bundle_dir(r))[0].version == str(r.version)
    threads = [threading.Thread(target=run, args=(reg.promote, "mom", v, "t", "race")) for v in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(reg.list(state="promoted")) == 1


# -- resolve ------------------------------------------------------------------------------------------
def test_resolve_name_name_at_version_and_a_directory(reg, bundle, tmp_path, monkeypatch):
    reg.register(bundle, "ann")
    reg.register(make_bundle(tmp_path / "b2", name="mom", seed=5), "ann")
    reg.promote("mom", 2, "ann", "live")
    meta, path, version = reg.resolve("mom")
    assert (meta.name, meta.version, version, path) == ("mom", "2", 2, reg.store / "mom" / "2" / "model.onnx")
    meta, path, version = reg.resolve("mom@1")
    assert (meta.version, version) == ("1", 1) and path == reg.store / "mom" / "1" / "model.onnx"
    meta, path, version = reg.resolve(str(bundle))  # a path: the bundle itself, unregistered
    assert (meta.version, version, path) == ("dev-seed1", None, bundle / "model.onnx")
    monkeypatch.chdir(tmp_path)
    assert reg.resolve("./bundle")[2] is None
    make_bundle(tmp_path / "loose", name="loose")
    assert reg.resolve("loose")[0].name == "loose"  # a bare name the registry does not know, but a directory
    with pytest.raises(ModelNotFound, match="no model named 'ghost'"):
        reg.resolve("ghost")
    with pytest.raises(ModelNotFound, match="has no version 9"):
        reg.resolve("mom@9")
    with pytest.raises(ModelNotFound, match="not a model bundle directory"):
        reg.resolve("./nowhere")
    for bad in ("mom@", "mom@x", "9mom", "mom@0", "a b"):
        with pytest.raises(RegistryError):
            reg.resolve(bad)


def test_resolve_refuses_a_store_copy_that_does_not_match_its_row(reg, bundle):
    rec = reg.register(bundle, "ann")
    d = reg.bundle_dir(rec)
    raw = json.loads((d / BUNDLE_META).read_text())
    raw["version"] = "7"
    (d / BUNDLE_META).write_text(json.dumps(raw))
    with pytest.raises(RegistryError, match="does not match the registry"):
        reg.resolve("mom@1")
    _corrupt_sha(d)
    with pytest.raises(RegistryError, match="stored bundle cannot be used"):
        reg.resolve("mom@1")


def test_parse_ref():
    assert parse_ref("mom") == ("mom", None) and parse_ref("m.o-m_1@12") == ("m.o-m_1", 12)
    with pytest.raises(RegistryError, match="versions start at 1"):
        parse_ref("mom@0")


def test_0007_downgrades_alone(database_url, bundle, tmp_path):
    db.migrate(database_url)
    eng = db.make_engine(database_url)
    try:
        ModelRegistry(eng, tmp_path / "s").register(bundle, "ann")
    finally:
        eng.dispose()
    db.downgrade(database_url, "0006")
    eng = db.make_engine(database_url)
    try:
        assert "models" not in sa.inspect(eng).get_table_names()
    finally:
        eng.dispose()
    assert sql_rows(database_url, "SELECT count(*) FROM audit_log") == [(1,)]
    db.migrate(database_url)
    assert sql_rows(database_url, "SELECT count(*) FROM models") == [(0,)]


# -- aitrader model ... ---------------------------------------------------------------------------------
@pytest.fixture
def cli_env(database_url, tmp_path, clean_env):
    clean_env.setenv("DATABASE_URL", database_url)
    clean_env.setenv("AITRADER_MODEL_STORE", str(tmp_path / "cli-store"))
    return database_url


def test_cli_register_list_show_promote_retire(cli_env, bundle, tmp_path, capsys):
    assert main(["model", "list"]) == 1
    assert "run scripts/run_migrations.sh" in capsys.readouterr().err
    db.migrate(cli_env)
    assert main(["model", "register", str(bundle), "--reason", "first"]) == 0
    out = capsys.readouterr().out
    assert f"registered mom@1 (registered) at {tmp_path / 'cli-store' / 'mom' / '1'}" in out
    assert main(["model", "register", str(bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert main(["model", "promote", "mom@1", "--reason", "live"]) == 0
    assert capsys.readouterr().out.strip() == "mom@1 promoted"
    assert main(["model", "promote", "mom@2", "--reason", "better", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["changed"] and res["model"]["state"] == "promoted" and res["replaced"]["version"] == 1
    assert main(["model", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "VERSION", "STATE"]
    assert [ln.split()[:3] for ln in lines[1:]] == [["mom", "1", "registered"], ["mom", "2", "promoted"]]
    assert main(["model", "list", "--state", "promoted", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert [(m["name"], m["version"]) for m in listed] == [("mom", 2)] and "metadata" not in listed[0]
    assert main(["model", "show", "mom"]) == 0
    out = capsys.readouterr().out
    assert "model:        mom@2" in out and "state:        promoted" in out and "last reason:  better" in out
    assert main(["model", "show", "mom@1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["metadata"]["version"] == "1" and shown["created_by"].startswith("cli:")
    assert main(["model", "retire", "mom@2", "--reason", "drifted"]) == 0
    assert "mom has no promoted version now" in capsys.readouterr().out
    assert main(["model", "show", "mom"]) == 1
    assert "no promoted version (versions: 1 registered, 2 retired)" in capsys.readouterr().err
    assert main(["model", "promote", "mom@2", "--reason", "undo"]) == 1
    assert "is retired and cannot be promoted" in capsys.readouterr().err
    assert main(["model", "promote", "mom@1", "--reason", "live"]) == 0
    assert main(["model", "promote", "mom@1", "--reason", "again"]) == 0
    assert "already promoted: nothing changed" in capsys.readouterr().out
    actors = {a for a, *_ in audit(cli_env)}
    assert len(actors) == 1 and actors.pop().startswith("cli:")


def test_cli_usage_and_failures_exit_2_and_1_without_tracebacks(cli_env, bundle, capsys):
    db.migrate(cli_env)
    assert main(["model", "register", str(bundle)]) == 0
    capsys.readouterr()
    usage = [(["model", "promote", "mom", "--reason", "x"], "needs NAME@VERSION"),
             (["model", "promote", "mom@1", "--reason", " "], "needs --reason"),
             (["model", "retire", "mom@x", "--reason", "x"], "is not a model name or NAME@VERSION"),
             (["model", "show", "bad name"], "is not a model name")]
    for argv, msg in usage:
        assert main(argv) == 2, argv
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: --reason is required
        main(["model", "promote", "mom@1"])
    assert e.value.code == 2
    capsys.readouterr()
    fails = [(["model", "show", "mom@5"], "has no version 5"), (["model", "retire", "zzz@1", "--reason", "x"],
                                                               "no model named 'zzz'"),
             (["model", "register", "/nonexistent/bundle"], "not a model bundle directory")]
    for argv, msg in fails:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err


def test_cli_as_a_process_refuses_a_bad_bundle_in_one_line(cli_env, bundle, tmp_path):
    db.migrate(cli_env)
    _two_classes_in_json(bundle)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "backend.cli", "model", "register", str(bundle)], cwd=ROOT, env=env, check=False,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("aitrader model register: ") and "model.json lists 2 classes" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert sql_rows(cli_env, "SELECT count(*) FROM models") == [(0,)]
    assert not (tmp_path / "cli-store" / "mom").exists()
