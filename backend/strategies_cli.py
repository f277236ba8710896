"""``aitrader strategies list|show NAME|enable NAME|disable NAME``: the strategy engine's strategies
(``backend.strategies``, the object the API's ``/strategies`` uses too).

``list`` / ``show`` read ``config/strategies.yml`` (``AITRADER_SE_STRATEGIES_PATH``), the
persisted switches (``strategy_switches``), the running engine's live switches
(``se:strategy_state``) and its counters (``stats:strategy_engine``: ``strategy.<name>.*``,
``fusion.<name>.*``). Each source that cannot be read is reported, not fatal.

``enable`` / ``disable`` need ``--reason``: they write the switch and an audit row to the
database (one transaction), then send ``strategy.enable`` / ``strategy.disable`` (scope
``strategy:<name>``) on ``ctl:commands`` and print the engine's ack. Without a running
engine the switch is saved and applies on its next start (exit 1, said so).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from backend import strategies
from common.config import CommonSettings, ConfigError

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_parser(sub: Any) -> None:
    sp = sub.add_parser("strategies", help="list / show the strategy engine's strategies, enable or disable one")
    sp.add_argument("action", choices=["list", "show", "enable", "disable"])
    sp.add_argument("name", nargs="?", help="show / enable / disable: the strategy's name")
    sp.add_argument("--reason", default="", help="enable / disable: why (required; kept in the audit log)")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the engine's ack")
    sp.add_argument("--json", action="store_true")


def _list(args: argparse.Namespace, common: CommonSettings) -> int:
    view = strategies.gather(common)
    rows, notes = view.rows(), view.notes
    if args.json:
        print(json.dumps({"strategies": rows, "notes": notes}, indent=2, default=str))
        return EXIT_OK
    head = ["NAME", "TYPE", "FOLLOWS", "SYMBOLS", "ALLOC", "ENABLED", "SIGNALS", "INTENTS", "SKIPPED"]
    table = []
    for r in rows:
        c = r["counters"]
        skipped = sum(v for k, v in c.items() if k.startswith(("skipped.", "fusion.")))
        table.append([
            r["name"], r["type"], ",".join(r["detectors"] + [f"model:{m}" for m in r["models"]]),
            "*" if r["symbols"] == "*" else ",".join(r["symbols"]), f"{r['allocation']:g}",
            ("yes" if r["enabled"] else "no") + ("" if r["enabled"] == r["enabled_in_file"] else " (switched)"),
            str(c.get("signals", 0)), str(c.get("intents", 0)), str(skipped),
        ])
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(head)]
    for line in [head, *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return EXIT_OK


def _show(args: argparse.Namespace, common: CommonSettings) -> int:
    view = strategies.gather(common)
    try:
        row = strategies.detail(view, args.name)
    except strategies.UnknownStrategy as e:
        print(f"aitrader strategies: {e}", file=sys.stderr)
        return EXIT_USAGE
    notes = view.notes
    if args.json:
        print(json.dumps(row | {"notes": notes}, indent=2, default=str))
        return EXIT_OK
    print(f"{row['name']}  (type {row['type']}; {'enabled' if row['enabled'] else 'disabled'}"
          f"{'' if row['running'] else '; engine not seen'})")
    sw = row["switch"]
    if sw:
        print(f"  switched {'on' if sw['enabled'] else 'off'} by {sw['actor']}: {sw['reason']}")
    for k, v in row["config"].items():
        print(f"  {k}: {v}")
    print("  counters:" + ("" if row["counters"] else " none yet"))
    for k, v in row["counters"].items():
        print(f"    {k}: {v}")
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return EXIT_OK


def _switch(args: argparse.Namespace, common: CommonSettings) -> int:
    import sqlalchemy as sa

    from backend.views import ViewError

    on = args.action == "enable"
    if not args.reason.strip():
        print(f"aitrader strategies {args.action}: --reason is required (it goes to the audit log)", file=sys.stderr)
        return EXIT_USAGE
    try:
        res = strategies.switch(common, args.name, on, reason=args.reason, actor=f"cli:{getpass.getuser()}",
                                timeout_s=args.timeout)
    except strategies.UnknownStrategy as e:
        print(f"aitrader strategies: {e}", file=sys.stderr)
        return EXIT_USAGE
    except strategies.EnableRefused as e:
        print(f"aitrader strategies enable: {e}", file=sys.stderr)
        return EXIT_FAIL
    except ViewError as e:
        print(f"aitrader strategies {args.action}: {e}", file=sys.stderr)
        return EXIT_FAIL
    except sa.exc.SQLAlchemyError as e:
        print(f"aitrader strategies {args.action}: database error: {str(e).splitlines()[0]} "
              "(run scripts/run_migrations.sh?)", file=sys.stderr)
        return EXIT_FAIL
    ack = res.ack
    if args.json:
        print(json.dumps({"name": res.name, "enabled": on, "saved": True, "ok": res.applied,
                          "applied": res.applied, "detail": ack.detail if ack else res.error}, indent=2))
    elif ack is not None:
        print(("" if ack.ok else "refused: ") + ack.detail + " (saved; applies across restarts)")
    else:
        print(f"strategy {res.name} {'enabled' if on else 'disabled'} in the database; {res.error}: "
              "it applies when the strategy engine next starts", file=sys.stderr)
    return EXIT_OK if res.applied else EXIT_FAIL


def run(args: argparse.Namespace, common: CommonSettings) -> int:
    try:
        if args.action == "list":
            return _list(args, common)
        if not args.name:
            print(f"aitrader strategies {args.action}: needs the strategy's NAME", file=sys.stderr)
            return EXIT_USAGE
        if args.action == "show":
            return _show(args, common)
        return _switch(args, common)
    except ConfigError as e:
        print(f"aitrader strategies: configuration error: {e}", file=sys.stderr)
        return EXIT_USAGE
