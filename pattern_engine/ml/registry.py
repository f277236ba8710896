"""The model registry: numbered versions of model bundles per name, one of them promoted.

A registered version is a row of the ``models`` table (``common.db.Model``) and a copy of the
bundle in the store folder (``AITRADER_MODEL_STORE``, default ``models/`` under
``AITRADER_HOME``) at ``<store>/<name>/<version>/``, whose ``model.json`` has ``version``
rewritten to the registry's number (``"1"``, ``"2"`` ...; ``onnx_sha256`` stays that of the
unchanged ``model.onnx``). The row's ``path`` is relative to the store.

States: ``registered`` → ``promoted`` → ``registered`` (replaced by another promoted version)
or ``retired``; ``registered`` → ``retired``. At most one version per name is ``promoted``
(checked in the transaction that promotes, and by a partial unique index). A retired version
cannot be promoted again: register its bundle again (a new version). Promoting the promoted
version or retiring a retired one changes nothing (``Transition.changed`` is false) and writes
no audit row. Every change writes an ``audit_log`` row (entity ``model``, entity id
``name@version``, actor ``by``, detail with the reason).

``resolve(ref)`` is what the engine loads: ``name`` (its promoted version), ``name@N`` or a
bundle directory (a path: it contains ``/``; unregistered).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy import Engine

from common import db
from pattern_engine.ml.metadata import (
    BUNDLE_META,
    BUNDLE_ONNX,
    BundleError,
    ModelMetadata,
    load_bundle,
    onnx_sha256,
)

__all__ = [
    "STATES",
    "InvalidModel",
    "ModelNotFound",
    "ModelRecord",
    "ModelRegistry",
    "NoPromotedVersion",
    "RegistryError",
    "StateConflict",
    "Transition",
    "check_bundle",
    "parse_ref",
]

log = logging.getLogger(__name__)

STATES = db.MODEL_STATES
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")  # ModelMetadata.name
_REF_RE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_.-]{0,63})@(?P<version>[0-9]{1,9})$")
_ATTEMPTS = 6  # register / state changes that lose a race (unique index, SQLite lock) try again
_SMOKE_ROWS = np.array([[0.0], [1.0], [-1.0], [0.0]], dtype=np.float32)  # each value repeated across the features

_models = db.Model.__table__
_audit = db.AuditLog.__table__
T = TypeVar("T")


class RegistryError(Exception):
    """The registry refused a request; the message says why."""


class ModelNotFound(RegistryError):
    """No such model name, or no such version of it."""


class NoPromotedVersion(ModelNotFound):
    """The name has versions but none is promoted."""


class InvalidModel(RegistryError):
    """A bundle that cannot be registered (bad files, or the model does not run); nothing was recorded."""


class StateConflict(RegistryError):
    """The change is not allowed from the version's state (a retired version cannot be promoted)."""


def _aware(t: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; every time the registry writes is UTC
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One row of ``models``."""

    id: int
    name: str
    version: int
    state: str
    path: str
    onnx_sha256: str
    kind: str
    features: list[str]
    metrics: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime | None
    created_by: str
    promoted_at: datetime | None
    promoted_by: str | None
    retired_at: datetime | None
    retired_by: str | None
    reason: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def from_row(cls, r: Any) -> ModelRecord:
        return cls(
            id=r.id, name=r.name, version=r.version, state=r.state, path=r.path, onnx_sha256=r.onnx_sha256,
            kind=r.kind, features=list(r.features or []), metrics=dict(r.metrics or {}),
            metadata=dict(r.metadata or {}), created_at=_aware(r.created_at), created_by=r.created_by,
            promoted_at=_aware(r.promoted_at), promoted_by=r.promoted_by, retired_at=_aware(r.retired_at),
            retired_by=r.retired_by, reason=r.reason,
        )

    def as_dict(self, metadata: bool = True) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601 UTC); without the full ``metadata`` when ``metadata`` is false."""
        out: dict[str, Any] = {}
        for f in self.__slots__:  # type: ignore[attr-defined]
            v = getattr(self, f)
            out[f] = v.isoformat() if isinstance(v, datetime) else v
        if not metadata:
            del out["metadata"]
        return out


@dataclass(frozen=True, slots=True)
class Transition:
    """What a promote / retire did: the version after it, whether anything changed, its state before, and
    (promote) the version it replaced, after the change."""

    record: ModelRecord
    changed: bool
    previous_state: str
    replaced: ModelRecord | None = None


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` → (name, None); ``name@N`` → (name, N). Raises ``RegistryError`` otherwise."""
    m = _REF_RE.match(ref)
    if m:
        version = int(m["version"])
        if version < 1:
            raise RegistryError(f"{ref!r}: versions start at 1")
        return m["name"], version
    if NAME_RE.match(ref):
        return ref, None
    raise RegistryError(f"{ref!r} is not a model name or NAME@VERSION (a name: a letter, then up to 63 of "
                        "letters, digits and ._-; a version: 1, 2, 3 ...)")


def check_bundle(directory: str | Path) -> tuple[ModelMetadata, Path]:
    """Validate a bundle and run it: its metadata and ONNX file, or ``InvalidModel`` saying what is wrong.

    The model is loaded with the CPU backend and run on a few rows (zeros, ones, minus ones); the output
    must be ``[rows, len(classes)]``, finite, in [0, 1], each row summing to 1 (± 1e-3): probabilities.
    """
    from pattern_engine.ml.backends import BackendUnavailable, make_backend

    try:
        meta, onnx = load_bundle(directory)
    except BundleError as e:
        raise InvalidModel(str(e)) from e
    x = np.ascontiguousarray(np.repeat(_SMOKE_ROWS, len(meta.features), axis=1))
    try:
        backend = make_backend("cpu", onnx, meta, max_batch=len(x))
    except (BackendUnavailable, BundleError) as e:  # names the file and the reason
        raise InvalidModel(str(e).splitlines()[0][:500]) from e
    try:
        out = np.asarray(backend.run(x))
    except Exception as e:
        raise InvalidModel(f"{onnx}: does not run on the CPU backend with {len(meta.features)} input column(s) "
                           f"{meta.input_name!r} -> {meta.output_name!r}: {str(e).splitlines()[0][:300]}") from e
    finally:
        backend.close()
    want = (len(x), len(meta.classes))
    if out.shape != want:
        raise InvalidModel(f"{onnx}: output {meta.output_name!r} has shape {list(out.shape)} for {len(x)} rows; "
                           f"expected {list(want)} (one column per class {meta.classes})")
    if not np.all(np.isfinite(out)):
        raise InvalidModel(f"{onnx}: output holds non-finite values (NaN / inf) for plain inputs")
    sums = out.sum(axis=1, dtype=np.float64)
    if out.min() < -1e-6 or out.max() > 1 + 1e-6 or not np.all(np.abs(sums - 1) <= 1e-3):
        raise InvalidModel(f"{onnx}: output rows are not class probabilities (values in [0, 1] summing to 1; "
                           f"row sums {np.round(sums, 4).tolist()}): add a softmax to the graph")
    return meta, onnx


def _check_actor(by: str, reason: str, need_reason: bool) -> None:
    if not by or len(by) > 64:
        raise RegistryError("who made the change ('by') must be 1-64 characters")
    if need_reason and not reason.strip():
        raise RegistryError("a reason is required (every promote / retire is audited)")


class ModelRegistry:
    """The registry over a migrated database (``engine``) and a store folder; thread- and process-safe."""

    def __init__(self, engine: Engine, store: str | Path) -> None:
        self.engine = engine
        self.store = Path(store).expanduser().resolve()

    # -- reads -------------------------------------------------------------------------------
    def list(self, name: str | None = None, state: str | None = None) -> list[ModelRecord]:
        """Every version (of ``name``, in ``state`` when given; deleted ones only when asked for), by name then
        version."""
        if state is not None and state not in STATES:
            raise RegistryError(f"unknown state {state!r} (states: {', '.join(STATES)})")
        q = sa.select(_models).order_by(_models.c.name, _models.c.version)
        if name is not None:
            q = q.where(_models.c.name == name)
        q = q.where(_models.c.state == state) if state is not None else q.where(_models.c.state != "deleted")
        with self.engine.connect() as c:
            return [ModelRecord.from_row(r) for r in c.execute(q)]

    def get(self, name: str, version: int) -> ModelRecord:
        """Version ``version`` of ``name``; ``ModelNotFound`` naming the versions there are."""
        with self.engine.connect() as c:
            return self._get(c, name, version)

    def promoted(self, name: str) -> ModelRecord | None:
        """The promoted version of ``name``, or None (one indexed read: fine to poll every second)."""
        q = sa.select(_models).where(_models.c.name == name, _models.c.state == "promoted")
        with self.engine.connect() as c:
            r = c.execute(q).first()
        return ModelRecord.from_row(r) if r is not None else None

    def bundle_dir(self, record: ModelRecord) -> Path:
        return self.store / record.path

    def resolve(self, ref: str) -> tuple[ModelMetadata, Path, int | None]:
        """What to load for ``ref``: (metadata, ONNX path, registry version or None).

        ``name`` → its promoted version; ``name@N`` → version N (any state: an operator asked for it);
        a path (contains ``/``) → that bundle directory, unregistered. A bare name the registry does not
        know that is a directory here is taken as a directory too. The stored copy is checked against
        the row (sha256 of the ONNX file, name, version).
        """
        if "/" in ref or ref in (".", ".."):
            return self._load_dir(ref)
        name, version = parse_ref(ref)
        if version is not None:
            return self._load_record(self.get(name, version))
        rec = self.promoted(name)
        if rec is not None:
            return self._load_record(rec)
        versions = self.list(name=name)
        if versions:
            raise NoPromotedVersion(f"model {name!r} has no promoted version (versions: "
                                f"{', '.join(f'{r.version} {r.state}' for r in versions)}); "
                                f"promote one or ask for {name}@N")
        if Path(ref).is_dir():
            return self._load_dir(ref)
        raise ModelNotFound(f"no model named {name!r} in the registry (and no directory {ref!r})")

    # -- changes ----------------------------------------------------------------------------------
    def register(self, bundle_dir: str | Path, by: str, reason: str = "") -> ModelRecord:
        """Check the bundle (``check_bundle``), copy it into the store as the name's next version, record it.

        A bundle that fails the check raises ``InvalidModel``; nothing is recorded or left in the store.
        """
        _check_actor(by, reason, need_reason=False)
        meta, onnx = check_bundle(bundle_dir)
        sha = onnx_sha256(onnx)
        staging = self.store / ".incoming" / uuid.uuid4().hex
        try:
            shutil.copytree(Path(bundle_dir), staging)
            if onnx_sha256(staging / BUNDLE_ONNX) != sha:
                raise InvalidModel(f"{onnx}: changed while it was being copied; register it again")
            return self._retry("register", lambda: self._insert(meta, sha, staging, by, reason))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.parent.rmdir()  # .incoming, when no other registration uses it
            except OSError:
                pass

    def promote(self, name: str, version: int, by: str, reason: str) -> Transition:
        """Make ``name@version`` the promoted version; the one promoted before goes back to ``registered``."""
        _check_actor(by, reason, need_reason=True)
        return self._retry("promote", lambda: self._promote(name, version, by, reason))

    def retire(self, name: str, version: int, by: str, reason: str) -> Transition:
        """Retire ``name@version`` (promoted or not); a retired promoted version leaves ``name`` with none."""
        _check_actor(by, reason, need_reason=True)
        return self._retry("retire", lambda: self._retire(name, version, by, reason))

    def delete(self, name: str, version: int, by: str, reason: str) -> Transition:
        """Delete ``name@version``'s stored bundle; its row stays, state ``deleted``, so the version number is
        never reused and the audit trail keeps pointing at something. The promoted version cannot be deleted
        (``StateConflict``): promote another or retire it first."""
        _check_actor(by, reason, need_reason=True)
        t = self._retry("delete", lambda: self._delete(name, version, by, reason))
        if t.changed:
            shutil.rmtree(self.store / t.record.path, ignore_errors=True)  # after the commit: a row never lacks files
        return t

    # -- internals ------------------------------------------------------------------------------
    def _delete(self, name: str, version: int, by: str, reason: str) -> Transition:
        with self.engine.begin() as c:
            rec = self._get(c, name, version, lock=True)
            if rec.state == "deleted":
                return Transition(rec, changed=False, previous_state=rec.state)
            if rec.state == "promoted":
                raise StateConflict(f"{rec.ref} is promoted (the engines run it): promote another version or "
                                    "retire it before deleting it")
            c.execute(_models.update().where(_models.c.id == rec.id)
                      .values(state="deleted", retired_at=datetime.now(UTC), retired_by=by, reason=reason))
            self._audit_row(c, by, "model.delete", rec.ref, {"reason": reason, "from": rec.state, "to": "deleted"})
            new = self._get(c, name, version)
        log.info("model %s deleted by %s: %s", rec.ref, by, reason)
        return Transition(new, changed=True, previous_state=rec.state)

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(_ATTEMPTS):
            try:
                return fn()
            except (sa.exc.IntegrityError, sa.exc.OperationalError) as e:
                # a concurrent register took the version / a concurrent promote took the name; SQLite: locked
                if attempt == _ATTEMPTS - 1 or not _retryable(e):
                    raise
                log.info("%s: lost a race (%s), trying again", what, str(e.orig).splitlines()[0] if e.orig else e)
                time.sleep(0.02 * 2**attempt)
        raise AssertionError("unreachable")

    def _get(self, c: sa.Connection, name: str, version: int, lock: bool = False) -> ModelRecord:
        q = sa.select(_models).where(_models.c.name == name, _models.c.version == version)
        r = c.execute(q.with_for_update() if lock else q).first()
        if r is not None:
            return ModelRecord.from_row(r)
        versions = list(c.execute(sa.select(_models.c.version).where(_models.c.name == name)
                                  .order_by(_models.c.version)).scalars())
        if not versions:
            raise ModelNotFound(f"no model named {name!r} in the registry")
        raise ModelNotFound(f"model {name!r} has no version {version} (versions: {', '.join(map(str, versions))})")

    def _insert(self, meta: ModelMetadata, sha: str, staging: Path, by: str, reason: str) -> ModelRecord:
        target: Path | None = None
        try:
            with self.engine.begin() as c:
                top = c.execute(sa.select(sa.func.max(_models.c.version)).where(_models.c.name == meta.name)).scalar()
                version = int(top or 0) + 1
                stored = meta.model_copy(update={"version": str(version), "onnx_sha256": sha}).dump()
                now = datetime.now(UTC)
                row = {"name": meta.name, "version": version, "state": "registered", "path": f"{meta.name}/{version}",
                       "onnx_sha256": sha, "kind": meta.kind[:64], "features": list(meta.features),
                       "metrics": stored.get("metrics") or {}, "metadata": stored, "created_at": now,
                       "created_by": by, "reason": reason}
                rid = c.execute(_models.insert().values(**row)).inserted_primary_key[0]
                self._audit_row(c, by, "model.register", f"{meta.name}@{version}",
                                {"reason": reason, "to": "registered", "onnx_sha256": sha, "kind": meta.kind,
                                 "source_version": meta.version})
                # the row (uncommitted) holds (name, version): no other registration can be writing this folder
                (staging / BUNDLE_META).write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
                target = self.store / meta.name / str(version)
                if target.exists():
                    log.warning("model store: %s exists without a registry row (left by a failed registration, or "
                                "another database uses this store); replacing it", target)
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                staging.rename(target)
            return ModelRecord.from_row(_Row({**row, "id": rid, "promoted_at": None, "promoted_by": None,
                                              "retired_at": None, "retired_by": None}))
        except BaseException:
            if target is not None and target.exists() and not staging.exists():
                target.rename(staging)  # not committed: the folder goes back (a retry reuses it)
            raise

    def _promote(self, name: str, version: int, by: str, reason: str) -> Transition:
        with self.engine.begin() as c:
            rec = self._get(c, name, version, lock=True)
            if rec.state == "promoted":
                return Transition(rec, changed=False, previous_state=rec.state)
            if rec.state in ("retired", "deleted"):
                raise StateConflict(f"{rec.ref} is {rec.state} and cannot be promoted; register its bundle again "
                                    "(a new version) to bring it back")
            old_row = c.execute(sa.select(_models).where(_models.c.name == name, _models.c.state == "promoted")
                                .with_for_update()).first()
            old = ModelRecord.from_row(old_row) if old_row is not None else None
            now = datetime.now(UTC)
            if old is not None:  # first, or the partial unique index refuses the promote
                c.execute(_models.update().where(_models.c.id == old.id).values(state="registered", reason=reason))
                self._audit_row(c, by, "model.demote", old.ref,
                                {"reason": reason, "from": "promoted", "to": "registered", "replaced_by": rec.ref})
            c.execute(_models.update().where(_models.c.id == rec.id)
                      .values(state="promoted", promoted_at=now, promoted_by=by, reason=reason))
            self._audit_row(c, by, "model.promote", rec.ref,
                            {"reason": reason, "from": rec.state, "to": "promoted",
                             "replaced": old.ref if old else None})
            new = self._get(c, name, version)
            replaced = self._get(c, old.name, old.version) if old is not None else None
        log.info("model %s promoted by %s (replacing %s): %s", rec.ref, by, old.ref if old else "none", reason)
        return Transition(new, changed=True, previous_state=rec.state, replaced=replaced)

    def _retire(self, name: str, version: int, by: str, reason: str) -> Transition:
        with self.engine.begin() as c:
            rec = self._get(c, name, version, lock=True)
            if rec.state == "retired":
                return Transition(rec, changed=False, previous_state=rec.state)
            if rec.state == "deleted":
                raise StateConflict(f"{rec.ref} is deleted")
            c.execute(_models.update().where(_models.c.id == rec.id)
                      .values(state="retired", retired_at=datetime.now(UTC), retired_by=by, reason=reason))
            self._audit_row(c, by, "model.retire", rec.ref, {"reason": reason, "from": rec.state, "to": "retired"})
            new = self._get(c, name, version)
        if rec.state == "promoted":
            log.info("model %s retired by %s while promoted: %s has no promoted version now (%s)",
                        rec.ref, by, name, reason)
        return Transition(new, changed=True, previous_state=rec.state)

    @staticmethod
    def _audit_row(c: sa.Connection, by: str, action: str, ref: str, detail: dict[str, Any]) -> None:
        c.execute(_audit.insert().values(ts=time.time_ns(), actor=by, action=action, entity="model",
                                         entity_id=ref, detail=detail))

    def _load_record(self, rec: ModelRecord) -> tuple[ModelMetadata, Path, int]:
        if rec.state == "deleted":
            raise ModelNotFound(f"{rec.ref} was deleted (its files are gone); register the bundle again")
        d = self.bundle_dir(rec)
        try:
            meta, onnx = load_bundle(d)
        except BundleError as e:
            raise RegistryError(f"{rec.ref}: the stored bundle cannot be used: {e}") from e
        if meta.onnx_sha256 != rec.onnx_sha256 or meta.name != rec.name or meta.version != str(rec.version):
            raise RegistryError(f"{rec.ref}: the stored bundle at {d} does not match the registry "
                                f"(name {meta.name!r}, version {meta.version!r}, sha256 {meta.onnx_sha256[:12]})")
        return meta, onnx, rec.version

    @staticmethod
    def _load_dir(ref: str) -> tuple[ModelMetadata, Path, None]:
        try:
            meta, onnx = load_bundle(ref)
        except BundleError as e:
            raise ModelNotFound(str(e)) from e
        return meta, onnx, None


class _Row:
    """Attribute access over a dict (a row the registry wrote, without reading it back)."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)


def _retryable(e: sa.exc.DBAPIError) -> bool:
    if isinstance(e, sa.exc.IntegrityError):
        return True
    msg = str(e.orig).lower() if e.orig is not None else ""
    return any(s in msg for s in ("locked", "busy", "deadlock", "could not serialize"))


# -- the engine's view: one registry from the environment's settings ---------------------------------
_opened: dict[tuple[str, Path], ModelRegistry] = {}
_keys: dict[tuple, tuple[str, Path]] = {}  # the environment -> its (database, store)


def default_registry() -> ModelRegistry:
    """The registry of this process's settings (``DATABASE_URL``, ``AITRADER_MODEL_STORE``), opened once per
    (database, store) — so a process whose environment names another database (a test, a backtest run
    with other settings) reads that one, never a registry opened earlier for different settings — for
    reading: the engine only reads it, and a SQLite file is opened read-only, so an engine started where no
    database exists yet creates none (its reads fail until one is migrated)."""
    # Loading the settings costs ~1 ms and the engine's model poller asks every poll_s: load them again
    # only when the environment (or the folder a relative path or .env is read from) changed.
    env = (os.getcwd(), *sorted((k, v) for k, v in os.environ.items()
                                if k.startswith("AITRADER_") or k == "DATABASE_URL"))
    key = _keys.get(env)
    if key is None:
        from common.config import CommonSettings, load

        common = load(CommonSettings)
        key = _keys[env] = (db.normalize_url(common.db_url), common.model_store_dir)
    url, store = key
    reg = _opened.get(key)
    if reg is None:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            import sqlite3

            path = Path(url[len("sqlite:///"):].split("?", 1)[0]).resolve()
            engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False))
        else:
            engine = db.make_engine(url)
        reg = _opened[key] = ModelRegistry(engine, store)
    return reg


def resolve(ref: str) -> tuple[ModelMetadata, Path, str | None]:
    """``ModelRegistry.resolve`` on the default registry, the version as a string (signals carry it)."""
    meta, onnx, version = default_registry().resolve(ref)
    return meta, onnx, None if version is None else str(version)


def promoted_version(name: str) -> str | None:
    """The promoted version of ``name`` in the default registry, or None."""
    rec = default_registry().promoted(name)
    return None if rec is None else str(rec.version)
