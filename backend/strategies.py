"""The strategy engine's strategies as the operator sees them, and their on/off switch.

One object for ``aitrader strategies`` and the API's ``/strategies``. Reading joins four
sources: ``config/strategies.yml`` (``AITRADER_SE_STRATEGIES_PATH``), the persisted switches
(``strategy_switches``), the running engine's live switches (``se:strategy_state``) and its
counters (``stats:strategy_engine``: ``strategy.<name>.*``, ``fusion.<name>.*``). A source
other than the file that cannot be read is reported in ``notes``, not fatal.

Switching writes the switch and its ``audit_log`` row (one transaction), then sends
``strategy.enable`` / ``strategy.disable`` (scope ``strategy:<name>``) on ``ctl:commands`` and
waits for the engine's ack. Without a running engine the switch is saved and applies on its
next start. Enabling is refused first when the enabled allocations would exceed 1.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from common import streams
from common.config import CommonSettings, load
from common.messages import ControlAck

__all__ = ["EnableRefused", "StrategiesView", "SwitchResult", "UnknownStrategy", "detail", "gather", "switch"]


class UnknownStrategy(LookupError):
    """The name is not in the strategies file."""


class EnableRefused(Exception):
    """The strategy cannot be switched on now (allocations); nothing was saved or sent."""


@dataclass
class StrategiesView:
    configs: dict[str, Any]
    switches: dict[str, dict[str, Any]]
    live: dict[str, bool] | None
    stats: dict[str, int]
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [_row(c, self.switches.get(n), self.live, self.stats) for n, c in self.configs.items()]


@dataclass(frozen=True)
class SwitchResult:
    name: str
    enabled: bool
    request_id: str
    ack: ControlAck | None
    error: str  # why there is no ack ("" with one)

    @property
    def applied(self) -> bool:
        return self.ack is not None and self.ack.ok


def _configs() -> dict[str, Any]:
    from strategy_engine.config import StrategySettings
    from strategy_engine.strategies import load_strategies

    return {s.name: s for s in load_strategies(load(StrategySettings).strategies_path)}


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _db_switches(engine: sa.Engine | None, db_url: str) -> tuple[dict[str, dict[str, Any]], str]:
    from backend.views import ViewError, open_database
    from strategy_engine.state import switch_rows

    own = engine is None
    if own:
        try:
            engine = open_database(db_url)
        except ViewError as e:
            return {}, str(e)
    try:
        return {r["name"]: r for r in switch_rows(engine)}, ""
    except sa.exc.SQLAlchemyError as e:
        return {}, f"database error: {_first_line(e)}"
    finally:
        if own:
            engine.dispose()


async def _live(redis_url: str) -> tuple[dict[str, bool] | None, dict[str, int], str]:
    from common.bus import connect

    r = connect(redis_url, socket_connect_timeout=3, socket_timeout=5)
    try:
        state = await r.hgetall(streams.STRATEGY_STATE)
        stats = await r.hgetall(streams.stats_key(streams.GROUP_STRATEGY))
    except Exception as e:  # noqa: BLE001 - Redis down: the file and the database still answer
        return None, {}, f"redis unreachable ({_first_line(e)})"
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
        "counters": _counters(stats, cfg.name),
    }


def gather(common: CommonSettings, engine: sa.Engine | None = None) -> StrategiesView:
    """Every source read once (``ConfigError`` when the strategies file is missing or invalid). ``engine``:
    the caller's database engine (else one is opened on ``common.db_url`` and closed)."""
    notes = []
    cfgs = _configs()
    switches, err = _db_switches(engine, common.db_url)
    if err:
        notes.append(f"switches not read from the database: {err}")
    live, stats, rerr = asyncio.run(_live(common.redis_url))
    if rerr:
        notes.append(rerr)
    elif live is None:
        notes.append("no running strategy engine has published its switches (se:strategy_state)")
    return StrategiesView(cfgs, switches, live, stats, notes)


def detail(view: StrategiesView, name: str) -> dict[str, Any]:
    """One strategy's row with its whole configuration (``UnknownStrategy``)."""
    cfg = view.configs.get(name)
    if cfg is None:
        raise UnknownStrategy(f"unknown strategy {name!r} (configured: {', '.join(view.configs)})")
    row = _row(cfg, view.switches.get(cfg.name), view.live, view.stats)
    row["config"] = cfg.model_dump(mode="json", exclude={"params"}) | {"params": cfg.params.model_dump(mode="json")}
    return row


def switch(common: CommonSettings, name: str, on: bool, *, reason: str, actor: str, timeout_s: float,
           engine: sa.Engine | None = None) -> SwitchResult:
    """Save the switch (with its audit row) and tell the running engine.

    Raises ``UnknownStrategy``, ``EnableRefused`` (nothing saved), ``ViewError`` / ``SQLAlchemyError`` (the
    database: nothing saved or sent). Redis down or no engine: saved, ``ack`` None and ``error`` says why."""
    from backend.control import make_control, send_via_bus
    from backend.views import open_database
    from strategy_engine.state import save_switch, switch_rows

    cfgs = _configs()
    cfg = cfgs.get(name)
    if cfg is None:
        raise UnknownStrategy(f"unknown strategy {name!r} (configured: {', '.join(cfgs)})")
    if on:
        from strategy_engine.strategies import StrategyRouter

        router = StrategyRouter(list(cfgs.values()))
        for n, sw in _db_switches(engine, common.db_url)[0].items():
            if n in router.all:
                router.enabled[n] = sw["enabled"]
        problem = router.enable_problem(cfg.name)
        if problem:
            raise EnableRefused(problem)
    req = make_control(f"strategy.{'enable' if on else 'disable'}", reason, f"strategy:{cfg.name}", actor)
    eng = engine if engine is not None else open_database(common.db_url)
    try:
        before_rows = {r["name"]: r for r in switch_rows(eng)}
        before = before_rows[cfg.name]["enabled"] if cfg.name in before_rows else cfg.enabled
        save_switch(eng, cfg.name, on, actor=actor, reason=reason, request_id=req.request_id,
                    ts=time.time_ns(), before=before)
    finally:
        if engine is None:
            eng.dispose()
    try:
        ack = asyncio.run(send_via_bus(common.redis_url, req, timeout_s))
        err = "" if ack else f"no answer from the strategy engine within {timeout_s:g}s"
    except Exception as e:  # noqa: BLE001 - Redis down: the switch is saved all the same
        ack, err = None, f"redis unreachable ({_first_line(e)})"
    return SwitchResult(cfg.name, on, req.request_id, ack, err)
