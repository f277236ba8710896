"""``aitrader`` — the command line that operators and scripts rely on.

    aitrader replay PATH... [--speed X|max] [--format NAME]   publish ticks into the running pipeline
    aitrader report [--json] [--wait-idle SECONDS]             what the run did (after draining)
    aitrader kill engage|reduce|release|status [--scope global|strategy:S|symbol:X] [--reason TEXT] [--json]
    aitrader cancel CLIENT_ORDER_ID [--json]                   cancel one open order
    aitrader cancel-all [--symbol S] [--strategy S] [--json]   cancel every open order (in scope)
        (kill / cancel / cancel-all: --via auto|bus|db — the bus, or the database's control_requests
         table when Redis is unreachable (auto, the default) or always (db))
    aitrader status [--json]                                   services' health and stream lag
    aitrader orders [--open] [--symbol S] [--strategy S] [--limit N] [--json]
    aitrader fills [--symbol S] [--limit N] [--json]
    aitrader positions [--json]                                net qty, average cost, P&L per symbol
    aitrader risk show [--json]                                the gateway's effective pre-trade limits
    aitrader risk set KEY VALUE --reason TEXT [--json]         change one limit now (durable, audited)
    aitrader risk unset KEY --reason TEXT [--json]             back to the risk file's value
    aitrader backtest PATH... [--config FILE] [--synthetic N] [--json] [--label L]   engines in process over ticks
    aitrader jobs list|show ID|cancel ID|submit TYPE|reap [--json]   jobs on the task queue
    aitrader worker [--concurrency N] [--queues Q,...]         run a job worker
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from backend import backtest_cli, jobs_cli, model_cli, strategies_cli, suggest_cli
from backend.control import make_control, trading_states
from backend.control import send as send_control
from backend.status import snapshot_once
from common.config import CommonSettings, ConfigError, load
from common.messages import Control, ControlAck

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    raise TypeError(type(o).__name__)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default, sort_keys=False))


# -- replay ----------------------------------------------------------------------------
def cmd_replay(argv: list[str]) -> int:
    import tick_replay

    return tick_replay.run(argv, prog="aitrader replay")


# -- report ----------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace, common: CommonSettings) -> int:
    from backend.report import build_report, format_report

    rep = asyncio.run(build_report(common, wait_idle_s=args.wait_idle))
    if args.json:
        _print_json(rep)
    else:
        print(format_report(rep))
    return EXIT_OK if rep["idle"] else EXIT_FAIL


# -- kill switch and cancels: control commands (sent by backend.control, shared with the API) ------------
def _control(command: str, reason: str, scope: str, args: dict[str, str] | None = None) -> Control:
    return make_control(command, reason, scope, f"cli:{getpass.getuser()}", args)


def _control_via(common: CommonSettings, req: Control, via: str, timeout_s: float) -> tuple[ControlAck | None, str, str]:
    """Send ``req`` by the bus or the database: (ack or None, the path taken, why none came)."""
    out = send_control(common, req, via, timeout_s)
    return out.ack, out.path, out.error


def _answer(args: argparse.Namespace, what: str, ack: ControlAck | None, path: str, err: str,
            line: Callable[[ControlAck], str], **extra: str) -> int:
    """Print the gateway's answer to a control command (``line`` of it, or JSON with ``extra``
    fields), or why none came; the exit code."""
    if ack is None:
        print(f"{what}: {err} within {args.timeout}s; is the pipeline running?", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        _print_json({"ok": ack.ok, **extra, "state": ack.state, "detail": ack.detail, "service": ack.service,
                     "via": path.split(":")[0]})
    else:
        if path != "bus":
            print(f"(sent through the {path})")
        print(line(ack))
    return EXIT_OK if ack.ok else EXIT_FAIL


def _detail(ack: ControlAck) -> str:
    return ("" if ack.ok else "refused: ") + ack.detail


def _kill_state_from_db(common: CommonSettings, scope: str) -> dict[str, Any] | None:
    """``scope``'s persisted state, and every scope that is not ACTIVE (``scopes``)."""
    import sqlalchemy as sa

    from common.db import make_engine

    eng = make_engine(common.db_url)
    try:
        rows = trading_states(eng)
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        eng.dispose()
    states = {r["scope"]: {**r, "changed_at": str(r["changed_at"] or "")} for r in rows}
    st: dict[str, Any] = dict(states.get(scope) or {"scope": scope, "state": "ACTIVE", "reason": "", "actor": "",
                                                      "changed_at": ""})
    st["scopes"] = [v for v in states.values() if v["state"] != "ACTIVE"]
    return st


def cmd_kill(args: argparse.Namespace, common: CommonSettings) -> int:
    from execution.kill_switch import scope_problem

    if args.action == "release" and not args.reason:
        print("kill release needs --reason TEXT (every release is audited)", file=sys.stderr)
        return EXIT_USAGE
    bad = scope_problem(args.scope)
    if bad is not None:
        print(f"kill {args.action}: {bad}", file=sys.stderr)
        return EXIT_USAGE
    req = _control(f"kill.{args.action}", args.reason or "", args.scope)
    ack, path, err = _control_via(common, req, args.via, args.timeout)
    st = _kill_state_from_db(common, args.scope) if ack is None and args.action == "status" else None
    if st is not None:  # no gateway answered: its last persisted state
        st["source"] = "database (gateway not answering)"
        if args.json:
            _print_json(st)
        else:
            print(f"trading state {st['scope']} {st['state']} ({st['source']})")
            for row in st["scopes"]:
                print(f"  {row['scope']} {row['state']} by {row['actor']}: {row['reason']}")
        return EXIT_OK
    return _answer(args, f"kill {args.action}", ack, path, err,
                   lambda a: f"trading state {args.scope} {a.state}" + (f" — {a.detail}" if a.detail else ""),
                   scope=args.scope)


# -- cancels ---------------------------------------------------------------------------
def cmd_cancel(args: argparse.Namespace, common: CommonSettings) -> int:
    if args.cmd == "cancel":
        command, cargs, what = "order.cancel", {"client_order_id": args.client_order_id}, args.client_order_id
    else:
        command = "order.cancel_all"
        cargs = {k: v for k, v in (("symbol", args.symbol), ("strategy", args.strategy)) if v}
        what = "all open orders" + "".join(f" {k}={v}" for k, v in cargs.items())
    ack, path, err = _control_via(common, _control(command, args.reason, "global", cargs), args.via, args.timeout)
    return _answer(args, f"{args.cmd} {what}", ack, path, err, _detail)


# -- status ----------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, common: CommonSettings) -> int:
    st = asyncio.run(snapshot_once(common.redis_url))
    if args.json:
        _print_json(st)
        return EXIT_OK if st["redis"] is None else EXIT_FAIL
    if st["redis"] is not None:
        print(st["redis"], file=sys.stderr)
        return EXIT_FAIL
    for s in st["services"]:
        if not s["instances"]:
            print(f"{s['service']:<40} {s['verdict']:<9}  no heartbeat seen")
        for i in s["instances"]:
            name = f"{s['service']}/{i['instance']}"
            print(f"{name:<40} {i['verdict']:<9} {i['status']:<9} {i['age_s']:>7.1f}s  {i['detail']}")
    for g in st["consumer_groups"]:
        print(f"  {g['stream'] + '/' + g['group']:<45} lag {g['lag']:>8}  pending {g['pending']:>6}")
    if st["dead_letters"]["total"]:
        print(f"  dead letters: {st['dead_letters']['by_stream']}")
    mem = st["redis_memory"]
    if mem["max_bytes"]:
        print(f"  redis memory {mem['used_bytes'] / 2**20:,.0f} of {mem['max_bytes'] / 2**20:,.0f} MiB "
              f"({mem['used_fraction']:.0%}, {mem['policy']})")
    if mem["warning"]:
        print(f"warning: {mem['warning']}", file=sys.stderr)
    return EXIT_OK


# -- views of the database (orders, fills, positions) and the risk limits -----------------
def _table(headers: list[str], rows: list[list[str]], right: set[int] | frozenset[int] = frozenset()) -> str:
    """Aligned columns; the columns in ``right`` (numbers) are right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def _exact(obj: Any) -> Any:
    """``obj`` with every Decimal as its exact string without trailing zeros (for --json)."""
    from backend.views import fmt_decimal

    if isinstance(obj, Decimal):
        return fmt_decimal(obj)
    if isinstance(obj, dict):
        return {k: _exact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_exact(v) for v in obj]
    return obj


def _view(common: CommonSettings, what: str, fn: Any) -> int:
    import sqlalchemy as sa

    from backend.views import ViewError, open_database

    try:
        engine = open_database(common.db_url)
    except ViewError as e:
        print(f"aitrader {what}: {e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        fn(engine)
    except sa.exc.SQLAlchemyError as e:  # the database went away mid-read: one line, not a trace
        print(f"aitrader {what}: database error: {str(e).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        engine.dispose()
    return EXIT_OK


def cmd_orders(args: argparse.Namespace, common: CommonSettings) -> int:
    from backend.views import fmt_decimal as d
    from backend.views import fmt_ts, list_orders

    def show(engine: Any) -> None:
        orders = list_orders(engine, open_only=args.open, symbol=args.symbol, strategy=args.strategy,
                             limit=args.limit)
        if args.json:
            _print_json(_exact({"orders": orders}))
            return
        if not orders:
            print("no orders" + (" open" if args.open else ""))
            return
        rows = [
            [fmt_ts(o["ts_intent"]), o["client_order_id"], o["strategy"], o["symbol"], o["side"], o["order_type"],
             o["tif"], d(o["qty"]), d(o["limit_price"]), d(o["cum_qty"]), d(o["avg_px"]) if o["cum_qty"] else "-",
             o["status"], o["reason"] or "-"]
            for o in orders
        ]
        print(_table(["TIME (UTC)", "CLIENT ORDER ID", "STRATEGY", "SYMBOL", "SIDE", "TYPE", "TIF", "QTY",
                      "LIMIT", "FILLED", "AVG PX", "STATUS", "REASON"], rows, right={7, 8, 9, 10}))

    return _view(common, "orders", show)


def cmd_fills(args: argparse.Namespace, common: CommonSettings) -> int:
    from backend.views import fmt_decimal as d
    from backend.views import fmt_ts, list_fills

    def show(engine: Any) -> None:
        fills = list_fills(engine, symbol=args.symbol, limit=args.limit)
        if args.json:
            _print_json(_exact({"fills": fills}))
            return
        if not fills:
            print("no fills")
            return
        rows = [
            [fmt_ts(f["ts_exec"]), f["exec_id"], f["strategy"], f["symbol"], f["side"], d(f["qty"]), d(f["price"]),
             d(f["fee"]), f["liquidity"]]
            for f in fills
        ]
        print(_table(["TIME (UTC)", "EXEC ID", "STRATEGY", "SYMBOL", "SIDE", "QTY", "PRICE", "FEE", "LIQUIDITY"],
                     rows, right={5, 6, 7}))

    return _view(common, "fills", show)


def cmd_positions(args: argparse.Namespace, common: CommonSettings) -> int:
    from backend.views import fmt_decimal as d
    from backend.views import positions, read_marks

    def show(engine: Any) -> None:
        marks = read_marks(common.redis_url)
        pos = positions(engine, marks)
        if args.json:
            _print_json(_exact({"marks_available": marks is not None, "positions": pos}))
            return
        if not pos:
            print("no positions (no fills yet)")
            return
        rows = [[p["symbol"], d(p["qty"]), d(p["avg_px"]), d(p["realized_pnl"]), d(p["fees"]), d(p["mark"]),
                 d(p["unrealized_pnl"])] for p in pos]
        print(_table(["SYMBOL", "QTY", "AVG COST", "REALIZED", "FEES", "MARK", "UNREALIZED"], rows,
                     right={1, 2, 3, 4, 5, 6}))
        if marks is None:
            print("(marks unavailable: Redis did not answer; unrealized P&L not shown)")

    return _view(common, "positions", show)


def cmd_risk(args: argparse.Namespace, common: CommonSettings) -> int:
    from execution.config import ExecutionSettings
    from execution.risk import LIMIT_KEYS, RiskConfig

    what = f"aitrader risk {args.action}"
    try:
        settings = load(ExecutionSettings)
        if args.action in ("set", "unset"):
            base = RiskConfig.load(settings.risk_file)
    except ConfigError as e:
        print(f"{what}: {str(e).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAIL
    if args.action in ("set", "unset"):
        return _risk_change(args, common, base)
    from backend.views import ViewError, open_database, risk_limits

    try:
        eng, why = open_database(common.db_url), ""
    except ViewError as e:  # no database (yet): the file's limits, saying so
        eng, why = None, str(e).splitlines()[0]
    try:
        limits = risk_limits(settings.risk_file, eng)
        if why:
            limits["changes_unknown"] = why
    except ConfigError as e:
        print(f"{what}: {str(e).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if eng is not None:
            eng.dispose()
    if args.json:
        _print_json(limits)
        return EXIT_OK
    defaults, overrides, changes = limits["defaults"], limits["overrides"], limits["changes"]
    print(f"risk file {settings.risk_file}, with the changes made while running (aitrader risk set) applied")
    g = limits["global"]
    print("global: " + "  ".join(
        f"{k}={','.join(v) or '-' if isinstance(v, list) else v}" for k, v in g.items()
    ))
    rows_ = [["(defaults)", *(defaults[k] for k in LIMIT_KEYS)]]
    for sym, v in sorted(limits["symbols"].items()):
        rows_.append([sym, *(v[k] + ("*" if k in overrides[sym] else " ") for k in LIMIT_KEYS)])
    rows_[0] = [rows_[0][0], *(c + " " for c in rows_[0][1:])]
    print(_table(["SYMBOL", *(k.upper() for k in LIMIT_KEYS)], rows_, right=set(range(1, len(LIMIT_KEYS) + 1))))
    print("* overrides the default for that symbol; symbols not listed use the defaults")
    print("kill_triggers: " + "  ".join(
        f"{k}={','.join(v) or '-' if isinstance(v, list) else ('off' if v is None else v)}"
        for k, v in limits["kill_triggers"].items()
    ))
    if limits["changes_unknown"]:
        print(f"changes made while running: unknown (database: {limits['changes_unknown']}); "
              "the file's limits are shown")
    elif changes:
        print("changes made while running (over the file; `aitrader risk unset KEY` goes back to the file's value):")
        print(_table(["KEY", "VALUE", "BY", "AT (UTC)", "REASON"],
                     [[c["key"], c["value"], c["actor"], c["changed_at"], c["reason"]] for c in changes]))
    else:
        print("changes made while running: none")
    return EXIT_OK


def _risk_change(args: argparse.Namespace, common: CommonSettings, base: Any) -> int:
    """``risk set KEY VALUE`` / ``risk unset KEY``: checked here first, applied by the gateway."""
    what = f"aitrader risk {args.action}"
    if not args.key or (args.action == "set" and args.value is None):
        usage = "KEY VALUE" if args.action == "set" else "KEY"
        print(f"{what} needs {usage}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "unset" and args.value is not None:
        print(f"{what} takes only KEY", file=sys.stderr)
        return EXIT_USAGE
    if not args.reason.strip():
        print(f"{what} needs --reason TEXT (every change of a limit is audited)", file=sys.stderr)
        return EXIT_USAGE
    try:
        base.with_override(args.key, args.value)  # the gateway checks again against its own file
    except ConfigError as e:
        print(f"{what}: {str(e).splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    cargs = {"key": args.key} | ({"value": args.value} if args.action == "set" else {})
    ack, path, err = _control_via(common, _control(f"risk.{args.action}", args.reason, "global", cargs),
                                  args.via, args.timeout)
    return _answer(args, f"{what} {args.key}", ack, path, err, _detail, key=args.key)


def _count(v: str) -> int:
    n = int(v)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


_VIA_HELP = ("how the command reaches the gateway: bus (ctl:commands), db (the control_requests table; works "
             "while Redis is down) or auto (default: the bus, the database when Redis is unreachable)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aitrader", description="AITrader command line")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("replay", help="publish ticks (files or synthetic) into the running pipeline", add_help=False)
    rp = sub.add_parser("report", help="print what the run did")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to SECONDS until every consumer group has drained")
    kp = sub.add_parser("kill", help="halt (engage), reduce-only, release or show the trading state of a scope")
    kp.add_argument("action", choices=["engage", "reduce", "release", "status"])
    kp.add_argument("--reason", default="")
    kp.add_argument("--scope", default="global", help="global (default), strategy:<name> or symbol:<SYM>")
    kp.add_argument("--timeout", type=float, default=5.0)
    kp.add_argument("--json", action="store_true")
    kp.add_argument("--via", choices=["auto", "bus", "db"], default="auto", help=_VIA_HELP)
    cp = sub.add_parser("cancel", help="cancel one open order (PENDING_CANCEL, then CANCELLED)")
    cp.add_argument("client_order_id")
    cap = sub.add_parser("cancel-all", help="cancel every open order, optionally of one symbol / strategy")
    cap.add_argument("--symbol", default="")
    cap.add_argument("--strategy", default="")
    for q in (cp, cap):
        q.add_argument("--reason", default="")
        q.add_argument("--timeout", type=float, default=5.0)
        q.add_argument("--json", action="store_true")
        q.add_argument("--via", choices=["auto", "bus", "db"], default="auto", help=_VIA_HELP)
    sp = sub.add_parser("status", help="services' health and stream lag")
    sp.add_argument("--json", action="store_true")
    op = sub.add_parser("orders", help="orders in the database, newest first")
    op.add_argument("--open", action="store_true", help="only orders still working")
    op.add_argument("--symbol")
    op.add_argument("--strategy")
    op.add_argument("--limit", type=_count, default=50, help="at most N rows (0 = all; default 50)")
    op.add_argument("--json", action="store_true")
    fp = sub.add_parser("fills", help="fills in the database, newest first")
    fp.add_argument("--symbol")
    fp.add_argument("--limit", type=_count, default=50, help="at most N rows (0 = all; default 50)")
    fp.add_argument("--json", action="store_true")
    pp = sub.add_parser("positions", help="net position, average cost and P&L per symbol (from the fills)")
    pp.add_argument("--json", action="store_true")
    rk = sub.add_parser("risk", help="show the gateway's pre-trade limits, or change one while it runs")
    rk.add_argument("action", choices=["show", "set", "unset"])
    rk.add_argument("key", nargs="?", help="set/unset: a dotted key of the risk file, e.g. defaults.max_order_qty, "
                    "symbols.BTCUSDT.max_position_qty, global.restricted_symbols, kill_triggers.daily_loss")
    rk.add_argument("value", nargs="?", help="set: the new value (lists comma-separated; 'off' disables a trigger)")
    rk.add_argument("--reason", default="")
    rk.add_argument("--timeout", type=float, default=5.0)
    rk.add_argument("--json", action="store_true")
    rk.add_argument("--via", choices=["auto", "bus", "db"], default="auto", help=_VIA_HELP)
    backtest_cli.add_parser(sub)
    model_cli.add_parser(sub)
    strategies_cli.add_parser(sub)
    suggest_cli.add_parser(sub)
    jobs_cli.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "replay":
        return cmd_replay(argv[1:])
    args = _parser().parse_args(argv)
    try:
        common = load(CommonSettings)
    except ConfigError as e:
        print(f"aitrader: configuration error: {e}", file=sys.stderr)
        return EXIT_USAGE
    handlers = {"report": cmd_report, "kill": cmd_kill, "status": cmd_status, "orders": cmd_orders,
                "fills": cmd_fills, "positions": cmd_positions, "risk": cmd_risk, "cancel": cmd_cancel,
                "cancel-all": cmd_cancel, "model": model_cli.run, "backtest": backtest_cli.run,
                "strategies": strategies_cli.run, "suggest": suggest_cli.run, "jobs": jobs_cli.run,
                "worker": jobs_cli.run_worker}
    return handlers[args.cmd](args, common)


if __name__ == "__main__":
    sys.exit(main())
