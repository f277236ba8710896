"""``aitrader model register|list|show|promote|retire``: the model registry from the command line.

    aitrader model register DIR [--reason TEXT] [--json]       check a bundle, store it as NAME's next version
    aitrader model list [--name N] [--state S] [--json]        every version, by name then version
    aitrader model show NAME[@VERSION] [--json]                one version (NAME alone: the promoted one)
    aitrader model promote NAME@VERSION --reason TEXT [--json] the version the engine runs for NAME
    aitrader model retire NAME@VERSION --reason TEXT [--json]  never to be promoted again
    aitrader model delete NAME@VERSION --reason TEXT [--json]  remove its stored files (not the promoted one)

The database is ``DATABASE_URL`` (else the SQLite file under ``AITRADER_HOME``), migrated
(``scripts/run_migrations.sh``); the store is ``AITRADER_MODEL_STORE``. The actor is
``cli:<user>``. Exit 0 done, 1 refused or failed, 2 bad usage. See docs/models.md, "Registry".
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from common.config import CommonSettings

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Usage(Exception):
    """Bad usage: exit 2 with the message."""


def _registry(common: CommonSettings) -> Any:
    import sqlalchemy as sa

    from backend.views import ViewError, open_database
    from pattern_engine.ml.registry import ModelRegistry, RegistryError

    try:
        engine = open_database(common.db_url)
    except ViewError as e:
        raise RegistryError(str(e)) from e
    try:
        has = "models" in sa.inspect(engine).get_table_names()
    except sa.exc.SQLAlchemyError:
        has = False
    if not has:
        engine.dispose()
        raise RegistryError("database not migrated (missing table models): run scripts/run_migrations.sh")
    return ModelRegistry(engine, common.model_store_dir)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"[:64]


def _versioned(ref: str, what: str) -> tuple[str, int]:
    from pattern_engine.ml.registry import RegistryError, parse_ref

    try:
        name, version = parse_ref(ref)
    except RegistryError as e:
        raise _Usage(str(e)) from e
    if version is None:
        raise _Usage(f"{what} needs NAME@VERSION (e.g. {name}@1); see `aitrader model list --name {name}`")
    return name, version


def _reason(args: argparse.Namespace, what: str) -> str:
    if not args.reason.strip():
        raise _Usage(f"{what} needs --reason TEXT (every promote / retire / delete is audited)")
    return args.reason


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _short_time(rec: Any) -> str:
    return rec.created_at.strftime("%Y-%m-%d %H:%M:%S") if rec.created_at else "-"


def _print_record(rec: Any, store: Any) -> None:
    def when(t: Any, by: Any) -> str:
        return f"{t.strftime('%Y-%m-%d %H:%M:%S')} UTC by {by}" if t else "-"

    m = rec.metadata
    lines = [
        ("model", rec.ref), ("state", rec.state), ("kind", rec.kind or "-"),
        ("bundle", str(store / rec.path)), ("onnx sha256", rec.onnx_sha256),
        ("registered", when(rec.created_at, rec.created_by)), ("promoted", when(rec.promoted_at, rec.promoted_by)),
        ("retired", when(rec.retired_at, rec.retired_by)), ("last reason", rec.reason or "-"),
        ("classes", ", ".join(map(str, m.get("classes", [])))), ("threshold", str(m.get("threshold", "-"))),
        ("horizon", json.dumps(m.get("horizon"))), ("features", ", ".join(rec.features)),
        ("metrics", json.dumps(rec.metrics, sort_keys=True) if rec.metrics else "-"),
    ]
    for k, v in lines:
        print(f"{k + ':':<13} {v}")


def cmd_register(args: argparse.Namespace, common: CommonSettings) -> int:
    reg = _registry(common)
    try:
        rec = reg.register(args.dir, _actor(), args.reason)
    finally:
        reg.engine.dispose()
    if args.json:
        _print_json(rec.as_dict())
    else:
        print(f"registered {rec.ref} ({rec.state}) at {reg.bundle_dir(rec)}")
        print(f"promote it with: aitrader model promote {rec.ref} --reason TEXT")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, common: CommonSettings) -> int:
    from backend.cli import _table

    reg = _registry(common)
    try:
        recs = reg.list(name=args.name, state=args.state)
    finally:
        reg.engine.dispose()
    if args.json:
        _print_json({"models": [r.as_dict(metadata=False) for r in recs]})
        return EXIT_OK
    if not recs:
        print("no models" + (f" named {args.name}" if args.name else "") + (f" {args.state}" if args.state else ""))
        return EXIT_OK
    rows = [[r.name, str(r.version), r.state, r.kind or "-", _short_time(r), r.created_by, r.onnx_sha256[:12],
             r.reason or "-"] for r in recs]
    print(_table(["NAME", "VERSION", "STATE", "KIND", "REGISTERED (UTC)", "BY", "SHA256", "LAST REASON"], rows,
                 right={1}))
    return EXIT_OK


def cmd_show(args: argparse.Namespace, common: CommonSettings) -> int:
    from pattern_engine.ml.registry import ModelNotFound, RegistryError, parse_ref

    try:
        name, version = parse_ref(args.ref)
    except RegistryError as e:
        raise _Usage(str(e)) from e
    reg = _registry(common)
    try:
        if version is not None:
            rec = reg.get(name, version)
        else:
            rec = reg.promoted(name)
            if rec is None:
                versions = reg.list(name=name)
                if not versions:
                    raise ModelNotFound(f"no model named {name!r} in the registry")
                raise ModelNotFound(f"model {name!r} has no promoted version (versions: "
                                    f"{', '.join(f'{r.version} {r.state}' for r in versions)}); "
                                    f"show one with {name}@N")
    finally:
        reg.engine.dispose()
    if args.json:
        _print_json(rec.as_dict() | {"bundle": str(reg.bundle_dir(rec))})
    else:
        _print_record(rec, reg.store)
    return EXIT_OK


def _change(args: argparse.Namespace, common: CommonSettings, what: str) -> int:
    name, version = _versioned(args.ref, what)
    reason = _reason(args, what)
    reg = _registry(common)
    try:
        fn = {"promote": reg.promote, "retire": reg.retire, "delete": reg.delete}[what]
        t = fn(name, version, _actor(), reason)
    finally:
        reg.engine.dispose()
    if args.json:
        _print_json({"changed": t.changed, "previous_state": t.previous_state, "model": t.record.as_dict(metadata=False),
                     "replaced": t.replaced.as_dict(metadata=False) if t.replaced else None})
        return EXIT_OK
    if not t.changed:
        print(f"{t.record.ref} is already {t.record.state}: nothing changed")
    elif what == "promote":
        print(f"{t.record.ref} promoted" + (f"; {t.replaced.ref} is registered again" if t.replaced else ""))
    elif what == "delete":
        print(f"{t.record.ref} deleted: its files are removed; the number is not reused")
    else:
        print(f"{t.record.ref} retired" + (f"; {name} has no promoted version now (a running engine keeps the "
                                           "model it has loaded)" if t.previous_state == "promoted" else ""))
    return EXIT_OK


def cmd_promote(args: argparse.Namespace, common: CommonSettings) -> int:
    return _change(args, common, "promote")


def cmd_retire(args: argparse.Namespace, common: CommonSettings) -> int:
    return _change(args, common, "retire")


def cmd_delete(args: argparse.Namespace, common: CommonSettings) -> int:
    return _change(args, common, "delete")


def _guarded(fn: Callable[[argparse.Namespace, CommonSettings], int], sub: str
             ) -> Callable[[argparse.Namespace, CommonSettings], int]:
    """``fn`` with its failures as one line on stderr and an exit code (no tracebacks)."""

    def run(args: argparse.Namespace, common: CommonSettings) -> int:
        import sqlalchemy as sa

        from pattern_engine.ml.registry import RegistryError

        try:
            return fn(args, common)
        except _Usage as e:
            print(f"aitrader model {sub}: {e}", file=sys.stderr)
            return EXIT_USAGE
        except RegistryError as e:
            print(f"aitrader model {sub}: {e}", file=sys.stderr)
            return EXIT_FAIL
        except sa.exc.SQLAlchemyError as e:
            first = str(e.orig if getattr(e, "orig", None) is not None else e).strip().splitlines()
            print(f"aitrader model {sub}: database error: {first[0] if first else type(e).__name__}",
                  file=sys.stderr)
            return EXIT_FAIL
        except OSError as e:  # the store folder: permissions, disk full
            print(f"aitrader model {sub}: model store: {e}", file=sys.stderr)
            return EXIT_FAIL

    return run


def add_commands(msub: Any) -> dict[str, Callable[[argparse.Namespace, Any], int]]:
    from common.db import MODEL_STATES

    p = msub.add_parser("register", help="check a model bundle and store it as its name's next version")
    p.add_argument("dir", help="bundle directory (model.onnx + model.json)")
    p.add_argument("--reason", default="", help="why (kept with the version and in the audit log)")
    p.add_argument("--json", action="store_true")
    p = msub.add_parser("list", help="registered model versions, by name then version")
    p.add_argument("--name")
    p.add_argument("--state", choices=MODEL_STATES)
    p.add_argument("--json", action="store_true")
    p = msub.add_parser("show", help="one model version (NAME alone: its promoted version)")
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("--json", action="store_true")
    for cmd, help_ in (("promote", "make NAME@VERSION the version the engine runs (the previous one: registered)"),
                       ("retire", "retire NAME@VERSION (if promoted, NAME has no promoted version after)"),
                       ("delete", "delete NAME@VERSION's stored files (not the promoted version; the row stays)")):
        p = msub.add_parser(cmd, help=help_)
        p.add_argument("ref", metavar="NAME@VERSION")
        p.add_argument("--reason", required=True, help="why (required: every change is audited)")
        p.add_argument("--json", action="store_true")
    return {sub: _guarded(fn, sub) for sub, fn in (("register", cmd_register), ("list", cmd_list),
                                                    ("show", cmd_show), ("promote", cmd_promote),
                                                    ("retire", cmd_retire), ("delete", cmd_delete))}
