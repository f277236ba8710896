"""``aitrader strategies list|show NAME|enable NAME|disable NAME``: the strategy engine's strategies.

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
import asyncio
import getpass
import json
import sys
import time
from typing import Any

from common import streams
from common.config import CommonSettings, ConfigError, load

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_parser(sub: Any) -> None:
    sp = sub.add_parser("strategies", help="list / show the strategy engine's strategies, enable or disable one")
    sp.add_argument("action", choices=["list", "show", "enable", "disable"])
    sp.add_argument("name", nargs="?", help="show / enable / disable: the strategy's name")
    sp.add_argument("--reason", default="", help="enable / disable: why (required; kept in the audit log)")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the engine's ack")
    sp.add_argument("--json", action="store_true")


def _configs() -> dict[str, Any]:
    from strategy_engine.config import StrategySettings
    from strategy_engine.strategies import load_strategies

    return {s.name: s for s in load_strategies(load(StrategySettings).strategies_path)}


def _db_switches(common: CommonSettings) -> tuple[dict[str, dict[str, Any]], str]:
    import sqlalchemy as sa

    from backend.views import ViewError, open_database
    from strategy_engine.state import switch_rows

    try:
        eng = open_database(common.db_url)
    except ViewError as e:
        return {}, str(e)
    try:
        return {r["name"]: r for r in switch_rows(eng)}, ""
    except sa.exc.SQLAlchemyError as e:
        return {}, f"database error: {str(e).splitlines()[0]}"
    finally:
        eng.dispose()


async def _live(common: CommonSettings) -> tuple[dict[str, bool] | None, dict[str, int], str]:
    from common.bus import connect

    r = connect(common.redis_url, socket_connect_timeout=3)
    try:
        state = await r.hgetall(streams.STRATEGY_STATE)
        stats = await r.hgetall(streams.stats_key(streams.GROUP_STRATEGY))
    except (OSError, Exception) as e:  # noqa: BLE001 - Redis down: the file and the database still answer
        return None, {}, f"redis unreachable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    finally:
        await r.aclose()
    live = {k.decode(): v == b"1" for k, v in state.items()} if state else None
    return live, {k.decode(): int(v) for k, v in stats.items()}, ""


def _counters(stats: dict[str, int], name: str) -> dict[str, int]:
    out = {}
    for prefix in (f"strategy.{name}.", f"fusion.{name}."):
        for k, v in stats.items():
            if k.startswith(prefix):
                out[k.removeprefix(f"strategy.{name}.")] = v
    return dict(sorted(out.items()))


def _row(cfg: Any, switch: dict[str, Any] | None, live: dict[str, bool] | None, stats: dict[str, int]) -> dict:
    c = _counters(stats, cfg.name)
    return {
        "name": cfg.name,
        "type": cfg.type,
        "detectors": list(cfg.detectors),
        "models": list(cfg.models),
        "symbols": cfg.symbols if cfg.symbols == "*" else list(cfg.symbols),
        "allocation": cfg.allocation,
        "enabled": (live or {}).get(cfg.name, switch["enabled"] if switch else cfg.enabled),
        "enabled_in_file": cfg.enabled,
        "switch": switch,
        "running": live is not None and cfg.name in live,
        "sizing": cfg.sizing.model,
        "stops": cfg.stops.model_dump(mode="json") if cfg.stops.any else None,
        "fusion": cfg.fusion.model_dump(mode="json") if cfg.fusion.window_ms else None,
        "counters": c,
    }


def _gather(common: CommonSettings) -> tuple[dict[str, Any], dict[str, dict], dict | None, dict, list[str]]:
    notes = []
    cfgs = _configs()
    switches, err = _db_switches(common)
    if err:
        notes.append(f"switches not read from the database: {err}")
    live, stats, rerr = asyncio.run(_live(common))
    if rerr:
        notes.append(rerr)
    elif live is None:
        notes.append("no running strategy engine has published its switches (se:strategy_state)")
    return cfgs, switches, live, stats, notes


def _list(args: argparse.Namespace, common: CommonSettings) -> int:
    cfgs, switches, live, stats, notes = _gather(common)
    rows = [_row(c, switches.get(n), live, stats) for n, c in cfgs.items()]
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
    cfgs, switches, live, stats, notes = _gather(common)
    cfg = cfgs.get(args.name)
    if cfg is None:
        print(f"aitrader strategies: unknown strategy {args.name!r} (configured: {', '.join(cfgs)})", file=sys.stderr)
        return EXIT_USAGE
    row = _row(cfg, switches.get(cfg.name), live, stats)
    row["config"] = cfg.model_dump(mode="json", exclude={"params"}) | {"params": cfg.params.model_dump(mode="json")}
    if args.json:
        print(json.dumps(row | {"notes": notes}, indent=2, default=str))
        return EXIT_OK
    print(f"{cfg.name}  (type {cfg.type}; {'enabled' if row['enabled'] else 'disabled'}"
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

    from backend.control import make_control, send_via_bus
    from backend.views import ViewError, open_database
    from strategy_engine.state import save_switch, switch_rows

    on = args.action == "enable"
    if not args.name:
        print(f"aitrader strategies {args.action}: needs the strategy's NAME", file=sys.stderr)
        return EXIT_USAGE
    if not args.reason.strip():
        print(f"aitrader strategies {args.action}: --reason is required (it goes to the audit log)", file=sys.stderr)
        return EXIT_USAGE
    cfgs = _configs()
    cfg = cfgs.get(args.name)
    if cfg is None:
        print(f"aitrader strategies: unknown strategy {args.name!r} (configured: {', '.join(cfgs)})", file=sys.stderr)
        return EXIT_USAGE
    if on:
        from strategy_engine.strategies import StrategyRouter

        router = StrategyRouter(list(cfgs.values()))
        for n, sw in _db_switches(common)[0].items():
            if n in router.all:
                router.enabled[n] = sw["enabled"]
        problem = router.enable_problem(cfg.name)
        if problem:
            print(f"aitrader strategies enable: {problem}", file=sys.stderr)
            return EXIT_FAIL
    actor = f"cli:{getpass.getuser()}"
    req = make_control(f"strategy.{args.action}", args.reason, f"strategy:{cfg.name}", actor)
    try:
        eng = open_database(common.db_url)
    except ViewError as e:
        print(f"aitrader strategies {args.action}: {e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        before_rows = {r["name"]: r for r in switch_rows(eng)}
        before = before_rows[cfg.name]["enabled"] if cfg.name in before_rows else cfg.enabled
        save_switch(eng, cfg.name, on, actor=actor, reason=args.reason, request_id=req.request_id,
                    ts=time.time_ns(), before=before)
    except sa.exc.SQLAlchemyError as e:
        print(f"aitrader strategies {args.action}: database error: {str(e).splitlines()[0]} "
              "(run scripts/run_migrations.sh?)", file=sys.stderr)
        return EXIT_FAIL
    finally:
        eng.dispose()
    try:
        ack = asyncio.run(send_via_bus(common.redis_url, req, args.timeout))
        err = "" if ack else f"no answer from the strategy engine within {args.timeout}s"
    except (OSError, Exception) as e:  # noqa: BLE001 - Redis down: the switch is saved all the same
        ack, err = None, f"redis unreachable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if args.json:
        print(json.dumps({"name": cfg.name, "enabled": on, "saved": True, "ok": bool(ack and ack.ok),
                          "applied": bool(ack and ack.ok), "detail": ack.detail if ack else err}, indent=2))
    elif ack is not None:
        print(("" if ack.ok else "refused: ") + ack.detail + " (saved; applies across restarts)")
    else:
        print(f"strategy {cfg.name} {'enabled' if on else 'disabled'} in the database; {err}: "
              "it applies when the strategy engine next starts", file=sys.stderr)
    return EXIT_OK if ack is not None and ack.ok else EXIT_FAIL


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
