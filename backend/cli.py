"""``aitrader`` — the command line that operators and scripts rely on.

    aitrader replay PATH... [--speed X|max] [--format NAME]   publish ticks into the running pipeline
    aitrader report [--json] [--wait-idle SECONDS]             what the run did (after draining)
    aitrader kill engage|release|status [--reason TEXT] [--json]
    aitrader cancel CLIENT_ORDER_ID [--json]                   cancel one open order
    aitrader cancel-all [--symbol S] [--strategy S] [--json]   cancel every open order (in scope)
    aitrader status [--json]                                   services' health and stream lag
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
import uuid
from decimal import Decimal
from typing import Any

from common import streams
from common.bus import connect, group_backlog
from common.config import CommonSettings, ConfigError, load
from common.messages import Control, ControlAck, Heartbeat, decode_as, encode

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


# -- kill switch -----------------------------------------------------------------------
async def _send_control(common: CommonSettings, command: str, reason: str, scope: str,
                        timeout_s: float, args: dict[str, str] | None = None) -> ControlAck | None:
    r = connect(common.redis_url, socket_connect_timeout=3)
    try:
        last = await r.xrevrange(streams.CONTROL_ACKS, count=1)
        cursor = last[0][0] if last else b"0-0"
        req = Control(
            request_id=uuid.uuid4().hex,
            command=command,
            scope=scope,
            reason=reason,
            actor=f"cli:{getpass.getuser()}",
            args=args or {},
            ts=time.time_ns(),
        )
        await r.xadd(streams.CONTROL, {b"d": encode(req)}, maxlen=100_000, approximate=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            resp = await r.xread({streams.CONTROL_ACKS: cursor}, count=100, block=200)
            for _stream, items in resp or []:
                for eid, fields in items:
                    cursor = eid
                    try:
                        ack = decode_as(fields.get(b"d", b""), ControlAck)
                    except Exception:  # noqa: BLE001 - someone else's garbage is not our answer
                        continue
                    if ack.request_id == req.request_id:
                        return ack
        return None
    finally:
        await r.aclose()


def _kill_state_from_db(common: CommonSettings) -> dict[str, str] | None:
    import sqlalchemy as sa

    from common.db import make_engine

    eng = make_engine(common.db_url)
    try:
        with eng.connect() as c:
            row = c.execute(
                sa.text("SELECT state, reason, actor, changed_at FROM trading_state WHERE scope = 'global'")
            ).first()
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        eng.dispose()
    if row is None:
        return {"state": "ACTIVE", "reason": "", "actor": "", "changed_at": ""}
    return {"state": row[0], "reason": row[1] or "", "actor": row[2] or "", "changed_at": str(row[3] or "")}


def cmd_kill(args: argparse.Namespace, common: CommonSettings) -> int:
    if args.action == "release" and not args.reason:
        print("kill release needs --reason TEXT (every release is audited)", file=sys.stderr)
        return EXIT_USAGE
    command = f"kill.{args.action}"
    try:
        ack = asyncio.run(_send_control(common, command, args.reason or "", args.scope, args.timeout))
    except OSError as e:
        ack, err = None, str(e)
    else:
        err = "no answer from the execution gateway"
    if ack is None:
        if args.action == "status":
            st = _kill_state_from_db(common)
            if st is not None:
                st["source"] = "database (gateway not answering)"
                _print_json(st) if args.json else print(f"trading state {st['state']} ({st['source']})")
                return EXIT_OK
        print(f"kill {args.action}: {err} within {args.timeout}s; is the pipeline running?", file=sys.stderr)
        return EXIT_FAIL
    result = {"ok": ack.ok, "state": ack.state, "detail": ack.detail, "service": ack.service}
    if args.json:
        _print_json(result)
    else:
        print(f"trading state {ack.state}" + (f" — {ack.detail}" if ack.detail else ""))
    return EXIT_OK if ack.ok else EXIT_FAIL


# -- cancels ---------------------------------------------------------------------------
def cmd_cancel(args: argparse.Namespace, common: CommonSettings) -> int:
    if args.cmd == "cancel":
        command, cargs, what = "order.cancel", {"client_order_id": args.client_order_id}, args.client_order_id
    else:
        command = "order.cancel_all"
        cargs = {k: v for k, v in (("symbol", args.symbol), ("strategy", args.strategy)) if v}
        what = "all open orders" + "".join(f" {k}={v}" for k, v in cargs.items())
    try:
        ack = asyncio.run(_send_control(common, command, args.reason, "global", args.timeout, cargs))
    except OSError as e:
        ack, err = None, str(e)
    else:
        err = "no answer from the execution gateway"
    if ack is None:
        print(f"{args.cmd} {what}: {err} within {args.timeout}s; is the pipeline running?", file=sys.stderr)
        return EXIT_FAIL
    result = {"ok": ack.ok, "state": ack.state, "detail": ack.detail, "service": ack.service}
    if args.json:
        _print_json(result)
    else:
        print(("" if ack.ok else "refused: ") + ack.detail)
    return EXIT_OK if ack.ok else EXIT_FAIL


# -- status ----------------------------------------------------------------------------
async def _status(common: CommonSettings) -> dict[str, Any]:
    r = connect(common.redis_url, socket_connect_timeout=3)
    try:
        now = time.time_ns()
        services = {}
        async for key in r.scan_iter(match="health:*"):
            data = await r.get(key)
            if not data:
                continue
            hb = decode_as(data, Heartbeat)
            age = (now - hb.ts) / 1e9
            services[f"{hb.service}/{hb.instance}"] = {
                "status": hb.status, "age_s": round(age, 2), "detail": hb.detail, "counters": hb.counters,
            }
        return {"services": services, "consumer_groups": await group_backlog(r)}
    finally:
        await r.aclose()


def cmd_status(args: argparse.Namespace, common: CommonSettings) -> int:
    st = asyncio.run(_status(common))
    if args.json:
        _print_json(st)
        return EXIT_OK
    if not st["services"]:
        print("no service is reporting health (is the pipeline running?)")
    for name, s in sorted(st["services"].items()):
        print(f"{name:<40} {s['status']:<9} {s['age_s']:>6.1f}s  {s['detail']}")
    for g, v in sorted(st["consumer_groups"].items()):
        print(f"  {g:<45} lag {v['lag']:>8}  pending {v['pending']:>6}")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aitrader", description="AITrader command line")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("replay", help="publish ticks (files or synthetic) into the running pipeline", add_help=False)
    rp = sub.add_parser("report", help="print what the run did")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to SECONDS until every consumer group has drained")
    kp = sub.add_parser("kill", help="engage, release or show the kill switch")
    kp.add_argument("action", choices=["engage", "release", "status"])
    kp.add_argument("--reason", default="")
    kp.add_argument("--scope", default="global")
    kp.add_argument("--timeout", type=float, default=5.0)
    kp.add_argument("--json", action="store_true")
    cp = sub.add_parser("cancel", help="cancel one open order (PENDING_CANCEL, then CANCELLED)")
    cp.add_argument("client_order_id")
    cap = sub.add_parser("cancel-all", help="cancel every open order, optionally of one symbol / strategy")
    cap.add_argument("--symbol", default="")
    cap.add_argument("--strategy", default="")
    for q in (cp, cap):
        q.add_argument("--reason", default="")
        q.add_argument("--timeout", type=float, default=5.0)
        q.add_argument("--json", action="store_true")
    sp = sub.add_parser("status", help="services' health and stream lag")
    sp.add_argument("--json", action="store_true")
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
    handlers = {"report": cmd_report, "kill": cmd_kill, "status": cmd_status, "cancel": cmd_cancel,
                "cancel-all": cmd_cancel}
    return handlers[args.cmd](args, common)


if __name__ == "__main__":
    sys.exit(main())
