"""Portfolio limits of the strategy engine: the portfolio manager's layer above the gateway's checks.

Two kinds of limit, configured in ``config/portfolio.yml`` (``AITRADER_SE_PORTFOLIO_PATH``):

**Exposure limits, checked on every intent before it is published** (``PortfolioGuard.check``).
An intent that opens or adds exposure and would take the portfolio past one of them is not
published; it is counted as ``intents_blocked.<limit>`` and logged. Intents that only reduce
``|position|`` always pass.

- ``portfolio_risk``: the sum over symbols of ``|position| x stop distance`` (the loss if every
  position hit its stop), divided by equity, must stay ``<= max_portfolio_risk`` (default 0.10).
  The stop distance of a symbol is the one recorded in the sizing of the last intent that
  opened exposure in it (``sizing["stop_distance"]``); a position the engine did not open
  (held at start, traded outside) counts at ``default_stop_fraction`` of its price.
- ``concentration``: ``|position| x price / equity <= max_symbol_concentration`` per symbol.
- ``correlated_exposure``: the gross exposure (``sum |position| x price``) of the symbols whose
  return correlation with the intent's symbol is ``>= correlation.threshold``, the symbol
  itself included, divided by equity, must stay ``<= correlation.max_exposure``. Returns are
  taken from the prices the account context sees (signal prices, fills, broker snapshots),
  sampled on a grid of ``correlation.sample_s`` seconds of *event time* (the signals'
  ``ts_event``, so a replay decides the same way at any speed): at each grid step the last
  known price of every symbol is recorded (carried forward when it did not change) and the
  correlation of log returns over the last ``window`` steps is recomputed. Symbols with fewer
  than ``min_samples`` returns are in no group.

Positions are the account context's (broker snapshot, fills since, and own intents in
flight), equity its equity; so every decision is O(symbols held) on cached data, never a call.

**Loss limits, evaluated on every fill, every account refresh and at least every
``check_interval_s``** (``PortfolioGuard.evaluate``), escalating through the gateway's
trading states (a ``Control`` on ``ctl:commands``, actor ``auto:portfolio``, a reason naming
the limit and the numbers; the gateway applies, persists and acknowledges it as any kill
command):

- ``daily_loss``: the portfolio's loss since the UTC day's start, as a fraction of the
  equity at the day's first evaluation: ``>= daily_loss.reduce`` (0.05) → ``global`` REDUCING,
  ``>= daily_loss.halt`` (0.075) → ``global`` HALTED.
- ``drawdown``: equity below its peak, as a fraction of the peak: ``>= drawdown.reduce``
  (0.15) → ``global`` REDUCING, ``>= drawdown.halt`` (0.20) → ``global`` HALTED.
- ``strategy_daily_loss``: a strategy's P&L since the day's start (from its own fills: cash
  flow plus its net quantities at the current prices, fees included), as a fraction of its
  capital (``allocation x`` the day's starting equity): ``>= reduce`` (0.05) →
  ``strategy:<name>`` REDUCING, ``>= halt`` (0.10) → ``strategy:<name>`` HALTED.

Each (limit, scope) is sent once per level: an operator who releases a scope is not
overruled while the same breach stands, only when it gets worse (the next level) or, after
it has cleared, breaches again. The engine also stops publishing opening intents for a scope
it knows to be REDUCING (all intents when HALTED): its own commands count at once, others'
(``aitrader kill``, the gateway's triggers) as their acknowledgements arrive
(``intents_blocked.trading_state``).

What survives a restart (the Redis hash ``se:portfolio``, written whenever it changes): the
day and its starting equity, the peak, the strategies' day baselines and the levels already
sent; the strategies' books themselves are ``se:books`` (``strategy_engine/books.py``). Lost (Redis flushed), the engine starts afresh from the broker's equity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common import streams
from common.config import ConfigError
from common.messages import Control, ControlAck, OrderIntent, Side, decode_as, encode
from strategy_engine.books import StrategyBooks

__all__ = [
    "LIMITS",
    "PORTFOLIO_STATE_KEY",
    "Correlation",
    "PortfolioConfig",
    "PortfolioGuard",
    "load_portfolio",
    "parse_portfolio",
]

log = logging.getLogger(__name__)

PORTFOLIO_STATE_KEY = "se:portfolio"
ACTOR = "auto:portfolio"
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
# intents_blocked.<limit>
LIMITS = ("portfolio_risk", "concentration", "correlated_exposure", "trading_state")
_RANK = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}


class Escalation(BaseModel):
    """Loss fractions at which a scope goes REDUCING and then HALTED (``null`` disables a level)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reduce: float | None = Field(None, gt=0, le=1)
    halt: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> Escalation:
        if self.reduce is not None and self.halt is not None and self.halt < self.reduce:
            raise ValueError("halt must be >= reduce")
        return self

    def level(self, loss: float) -> str:
        if self.halt is not None and loss >= self.halt:
            return "HALTED"
        if self.reduce is not None and loss >= self.reduce:
            return "REDUCING"
        return "ACTIVE"


class CorrelationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.8, gt=0, le=1)
    max_exposure: float = Field(0.5, gt=0, le=100)
    window: int = Field(120, ge=3, le=10_000)
    min_samples: int = Field(30, ge=3, le=10_000)
    sample_s: float = Field(1.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _samples(self) -> CorrelationConfig:
        if self.min_samples > self.window:
            raise ValueError("min_samples must be <= window")
        return self


class PortfolioConfig(BaseModel):
    """The ``portfolio:`` section of ``config/portfolio.yml`` (fractions of equity unless said)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    max_portfolio_risk: float | None = Field(0.10, gt=0, le=10)
    default_stop_fraction: float = Field(0.01, gt=0, le=1)
    max_symbol_concentration: float | None = Field(0.25, gt=0, le=100)
    correlation: CorrelationConfig | None = CorrelationConfig()
    daily_loss: Escalation = Escalation(reduce=0.05, halt=0.075)
    drawdown: Escalation = Escalation(reduce=0.15, halt=0.20)
    strategy_daily_loss: Escalation = Escalation(reduce=0.05, halt=0.10)
    check_interval_s: float = Field(0.5, gt=0, le=60)


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def parse_portfolio(doc: object, source: str = "portfolio") -> PortfolioConfig:
    """Validate a parsed document ``{portfolio: {...}}``; ``ConfigError`` names every bad or unknown key."""
    if doc is None or doc == {}:
        return PortfolioConfig()
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'portfolio' section")
    unknown = [k for k in doc if k != "portfolio"]
    if unknown:
        raise ConfigError(f"{source}: unknown keys: " + ", ".join(map(str, unknown)))
    section = doc.get("portfolio") or {}
    try:
        return PortfolioConfig.model_validate(section)
    except ValidationError as e:
        unknown = [f"portfolio.{_loc(err['loc'])}" for err in e.errors() if err["type"] == "extra_forbidden"]
        others = [f"portfolio.{_loc(err['loc'])}: {err['msg']}" for err in e.errors()
                  if err["type"] != "extra_forbidden"]
        parts = (["unknown keys: " + ", ".join(unknown)] if unknown else []) + others
        raise ConfigError(f"{source}: " + "; ".join(parts)) from e


def load_portfolio(path: Path | str | None) -> PortfolioConfig:
    """Read and validate the portfolio limits file (defaults when ``path`` is None)."""
    if path is None:
        return PortfolioConfig()
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"portfolio file {p}: {e}") from e
    return parse_portfolio(doc, f"portfolio file {p}")


class Correlation:
    """Correlated groups of symbols from prices sampled on an event-time grid."""

    def __init__(self, cfg: CorrelationConfig) -> None:
        self.cfg = cfg
        self.step_ns = int(cfg.sample_s * NS_PER_S)
        self.bucket = -1
        self.last: dict[str, float] = {}  # last price per symbol
        self.rows: list[dict[str, float]] = []  # sampled prices, oldest first (window + 1 rows)
        self.groups: dict[str, frozenset[str]] = {}  # symbol -> symbols correlated with it (itself included)
        self.recomputes = 0

    def observe(self, symbol: str, price: float, ts_event: int) -> None:
        """A price at event time ``ts_event``; closes the grid steps it moved past."""
        b = ts_event // self.step_ns
        if b > self.bucket:
            if self.bucket >= 0 and self.last:
                # One row per step passed, carried forward (a quiet step is a zero return), at most a window.
                n = min(b - self.bucket, self.cfg.window + 1)
                row = dict(self.last)
                self.rows.extend(row for _ in range(n))
                del self.rows[: max(0, len(self.rows) - (self.cfg.window + 1))]
                self.recompute()
            self.bucket = b
        if price > 0 and math.isfinite(price):
            self.last[symbol] = price

    def recompute(self) -> None:
        rows, cfg = self.rows, self.cfg
        if len(rows) <= cfg.min_samples:
            self.groups = {}
            return
        syms = sorted(s for s in rows[-1] if sum(1 for r in rows if s in r) > cfg.min_samples)
        if len(syms) < 2:
            self.groups = {}
            return
        # The longest tail of rows where every eligible symbol has a price.
        start = len(rows)
        while start > 0 and all(s in rows[start - 1] for s in syms):
            start -= 1
        px = np.array([[r[s] for s in syms] for r in rows[start:]], dtype=np.float64)
        rets = np.diff(np.log(px), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(rets, rowvar=False)
        corr = np.nan_to_num(corr, nan=0.0)
        groups: dict[str, frozenset[str]] = {}
        for i, s in enumerate(syms):
            members = frozenset(syms[j] for j in np.flatnonzero(corr[i] >= cfg.threshold)) | {s}
            if len(members) > 1:
                groups[s] = members
        self.groups = groups
        self.recomputes += 1

    def group(self, symbol: str) -> frozenset[str]:
        return self.groups.get(symbol, frozenset((symbol,)))


class PortfolioGuard:
    """Checks intents against the exposure limits and turns loss-limit breaches into ``Control``s.

    ``ctx`` is the engine's ``AccountContext`` (positions, prices, equity); ``allocations`` the
    enabled strategies' allocations by name. All methods are synchronous and cheap except
    ``run`` (the background evaluation and acknowledgement watch)."""

    def __init__(
        self,
        cfg: PortfolioConfig,
        ctx: Any,
        allocations: dict[str, float],
        books: StrategyBooks | None = None,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.allocations = allocations
        self.wall_ns = wall_ns
        self.corr = Correlation(cfg.correlation) if cfg.correlation is not None else None
        self.stops: dict[str, float] = {}  # stop distance per unit of the last opening intent, by symbol
        # Loss-limit state (persisted).
        self.day = -1
        self.day_start: float | None = None
        self.peak: float | None = None
        self.books = books if books is not None else StrategyBooks()  # each strategy's fills (books.py)
        self.day_base: dict[str, float] = {}  # strategy -> its P&L at the day's start
        self.sent: dict[str, str] = {}  # "<limit>|<scope>" -> level already sent
        self.dirty = False
        # Trading states known to the engine (its own commands at once, others' from their acks).
        self.states: dict[str, tuple[str, str]] = {}  # scope -> (state, reason)
        self.outbox: list[Control] = []  # commands to publish
        self._breach_counts: dict[str, int] = {}  # portfolio_breaches.<limit> not yet in the stats hash
        self.last_breach = ""
        self.last_block = ""
        self.blocked: dict[str, int] = {}
        self._watch: dict[str, str] = {}  # request id of a kill command seen on ctl:commands -> scope
        self._wake = asyncio.Event()

    # -- the hot path ------------------------------------------------------------------------
    def observe(self, symbol: str, price: float, ts_event: int) -> None:
        """A signal's price (call once per signal): feeds the correlation sampling."""
        if self.corr is not None:
            self.corr.observe(symbol, price, ts_event)

    def _state(self, scope: str) -> int:
        st = self.states.get(scope)
        return _RANK.get(st[0], 0) if st else 0

    def check(self, intent: OrderIntent) -> str | None:
        """The limit ``intent`` would breach (it must not be published), or None."""
        cfg = self.cfg
        if not cfg.enabled:
            return None
        ctx = self.ctx
        sym = intent.symbol
        cur = float(ctx.position(sym))
        signed = float(intent.qty) if intent.side == Side.BUY else -float(intent.qty)
        new = cur + signed
        reducing = abs(new) <= abs(cur) and new * cur >= 0
        rank = max(self._state("global"), self._state(f"strategy:{intent.strategy}"), self._state(f"symbol:{sym}"))
        if rank >= 2 or (rank == 1 and not reducing):
            return self._block("trading_state", intent, "the scope is " + ("HALTED" if rank >= 2 else "REDUCING"))
        if reducing:
            return None
        eq = float(ctx.equity)
        price = float(intent.ref_price)
        if eq <= 0:
            return self._block("portfolio_risk", intent, f"equity {eq:.2f} <= 0")
        prices = ctx.prices
        if cfg.max_symbol_concentration is not None:
            conc = abs(new) * price / eq
            if conc > cfg.max_symbol_concentration:
                return self._block("concentration", intent, f"{sym} would be {conc:.4f} of equity "
                                   f"(limit {cfg.max_symbol_concentration:g})")
        stop = float(intent.sizing.get("stop_distance", 0.0)) if intent.sizing else 0.0
        if not stop > 0:
            stop = cfg.default_stop_fraction * price
        if cfg.max_portfolio_risk is not None:
            risk = abs(new) * stop + self._other_risk(sym, prices)
            frac = risk / eq
            if frac > cfg.max_portfolio_risk:
                return self._block("portfolio_risk", intent, f"risk at the stops would be {risk:.2f} = "
                                   f"{frac:.4f} of equity {eq:.2f} (limit {cfg.max_portfolio_risk:g})")
        if self.corr is not None:
            group = self.corr.group(sym)
            if len(group) > 1:
                gross = abs(new) * price
                for s in group:
                    if s != sym:
                        p = prices.get(s)
                        gross += abs(float(ctx.position(s))) * (float(p) if p is not None else 0.0)
                frac = gross / eq
                if frac > self.corr.cfg.max_exposure:
                    return self._block("correlated_exposure", intent, f"{len(group)} correlated symbols "
                                       f"({', '.join(sorted(group))}) would hold {gross:.2f} = {frac:.4f} of "
                                       f"equity (limit {self.corr.cfg.max_exposure:g})")
        self.stops[sym] = stop
        return None

    def _other_risk(self, sym: str, prices: dict[str, Decimal]) -> float:
        """The loss at the stops of every position but ``sym``'s (own intents in flight included)."""
        ctx = self.ctx
        stops, dflt = self.stops, self.cfg.default_stop_fraction
        confirmed, pending = ctx.positions, ctx.pending_positions
        risk = 0.0
        for s in confirmed.keys() | pending.keys() if pending else confirmed:
            if s == sym:
                continue
            q = confirmed.get(s) or 0
            if pending:
                q += pending.get(s) or 0
            if not q:
                continue
            stop = stops.get(s)
            if stop is None:
                p = prices.get(s)
                stop = dflt * float(p) if p is not None else 0.0
            risk += abs(float(q)) * stop
        return risk

    def _block(self, limit: str, intent: OrderIntent, why: str) -> str:
        n = self.blocked[limit] = self.blocked.get(limit, 0) + 1
        self.last_block = f"{limit}: {intent.strategy} {intent.side.name} {intent.qty} {intent.symbol}: {why}"
        if n == 1 or n % 1000 == 0:  # the first and every 1000th: a blocked burst must not flood the log
            log.warning("portfolio: intent %s blocked (%d so far by %s) — %s", intent.client_order_id, n, limit,
                        self.last_block)
        return limit

    # -- fills -----------------------------------------------------------------------------
    def on_fill(self, strategy: str) -> None:
        """A fill was booked to ``strategy``'s book (``StrategyBooks.apply_report``): evaluate soon."""
        if self.day_start is not None:
            self.day_base.setdefault(strategy, 0.0)  # a strategy's first fill today: its day starts flat
        self.dirty = True
        self.poke()

    def poke(self) -> None:
        """Evaluate the loss limits soon (a fill, a refresh)."""
        self._wake.set()

    # -- loss limits -----------------------------------------------------------------------
    def evaluate(self, now_ns: int | None = None) -> list[Control]:
        """Check the loss limits now; the commands to send (also queued on ``outbox``)."""
        ctx, cfg = self.ctx, self.cfg
        if not cfg.enabled or ctx.refreshed_at is None:
            return []  # no account yet: nothing to measure against
        now = self.wall_ns() if now_ns is None else now_ns
        eq = float(ctx.equity)
        day = now // NS_PER_DAY
        if day != self.day or self.day_start is None:
            self.day, self.day_start = day, eq
            self.day_base = {n: b.pnl(ctx.prices) for n, b in self.books.books.items()}
            self.sent = {k: v for k, v in self.sent.items() if not k.startswith(("daily_loss|",
                                                                                "strategy_daily_loss|"))}
            self.dirty = True
        if self.peak is None or eq > self.peak:
            self.peak = eq
            self.dirty = True
        out: list[Control] = []
        if self.day_start > 0:
            loss = (self.day_start - eq) / self.day_start
            out += self._escalate("daily_loss", "global", cfg.daily_loss.level(loss),
                                  f"daily loss {loss:.4f} of the day's starting equity {self.day_start:.2f} "
                                  f"(equity {eq:.2f}; limits reduce {cfg.daily_loss.reduce}, halt "
                                  f"{cfg.daily_loss.halt})")
            for name, b in self.books.books.items():
                alloc = self.allocations.get(name)
                if not alloc:
                    continue
                capital = alloc * self.day_start
                pnl = b.pnl(ctx.prices) - self.day_base.get(name, 0.0)
                sloss = -pnl / capital
                lim = cfg.strategy_daily_loss
                out += self._escalate("strategy_daily_loss", f"strategy:{name}", lim.level(sloss),
                                      f"strategy {name} lost {-pnl:.2f} today = {sloss:.4f} of its capital "
                                      f"{capital:.2f} (allocation {alloc:g}; limits reduce {lim.reduce}, halt "
                                      f"{lim.halt})")
        if self.peak > 0:
            dd = (self.peak - eq) / self.peak
            out += self._escalate("drawdown", "global", cfg.drawdown.level(dd),
                                  f"drawdown {dd:.4f} from the peak equity {self.peak:.2f} (equity {eq:.2f}; "
                                  f"limits reduce {cfg.drawdown.reduce}, halt {cfg.drawdown.halt})")
        return out

    def _escalate(self, limit: str, scope: str, level: str, why: str) -> list[Control]:
        key = f"{limit}|{scope}"
        had = self.sent.get(key, "ACTIVE")
        if level == "ACTIVE":
            if had != "ACTIVE":
                self.sent.pop(key)  # cleared: a new breach is sent again (the scope is not released here)
                self.dirty = True
            return []
        if _RANK[level] <= _RANK[had]:
            return []
        self.sent[key] = level
        self.dirty = True
        reason = f"{limit}: {why}"
        ctl = Control(request_id=f"portfolio-{limit}-{uuid.uuid4().hex[:12]}",
                      command="kill.engage" if level == "HALTED" else "kill.reduce", scope=scope,
                      reason=reason[:2000], actor=ACTOR, args={"limit": limit, "level": level},
                      ts=self.wall_ns())
        if self._state(scope) < _RANK[level]:
            self.states[scope] = (level, reason)  # stop opening at once; the ack confirms
        self._watch[ctl.request_id] = scope  # its ack confirms the state
        self.last_breach = f"{scope} -> {level} ({reason})"
        log.error("portfolio: %s -> %s: %s", scope, level, reason)
        self.outbox.append(ctl)
        name = f"portfolio_breaches.{limit}"
        self._breach_counts[name] = self._breach_counts.get(name, 0) + 1
        return [ctl]

    # -- persistence -----------------------------------------------------------------------
    def dump(self) -> dict[str, str]:
        return {
            "day": str(self.day),
            "day_start": "" if self.day_start is None else repr(self.day_start),
            "peak": "" if self.peak is None else repr(self.peak),
            "day_base": json.dumps(self.day_base),
            "sent": json.dumps(self.sent),
        }

    def restore(self, saved: dict[bytes | str, bytes | str]) -> bool:
        """Continue from ``dump``'s fields; False (state left fresh) when absent or unreadable."""
        d = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in (saved or {}).items()}
        if not d:
            return False
        try:
            day = int(d.get("day", "-1"))
            day_start = float(d["day_start"]) if d.get("day_start") else None
            peak = float(d["peak"]) if d.get("peak") else None
            day_base = {str(k): float(v) for k, v in json.loads(d.get("day_base") or "{}").items()}
            sent = {str(k): str(v) for k, v in json.loads(d.get("sent") or "{}").items() if v in _RANK}
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("portfolio: stored state unreadable (%s); starting afresh", e)
            return False
        if any(v is not None and not math.isfinite(v) for v in (day_start, peak)):
            log.warning("portfolio: stored state not finite; starting afresh")
            return False
        self.day, self.day_start, self.peak = day, day_start, peak
        self.day_base, self.sent = day_base, sent
        return True

    # -- gateway states --------------------------------------------------------------------
    def on_command(self, ctl: Control) -> None:
        """A kill command seen on ``ctl:commands`` (anyone's): its ack tells the scope's new state."""
        if ctl.command.startswith("kill.") and ctl.command != "kill.status":
            self._watch[ctl.request_id] = ctl.scope or "global"
            if len(self._watch) > 10_000:
                self._watch.pop(next(iter(self._watch)))

    def on_ack(self, ack: ControlAck) -> None:
        scope = self._watch.pop(ack.request_id, None)
        if scope is None or not ack.ok or ack.state not in _RANK:
            return
        if ack.state == "ACTIVE":
            self.states.pop(scope, None)
        else:
            self.states[scope] = (ack.state, ack.detail[:200])

    def on_global_mirror(self, fields: dict[bytes, bytes]) -> None:
        """The gateway's Redis mirror of the global state (also its automatic triggers' halts)."""
        st = (fields.get(b"state") or b"").decode()
        if st not in _RANK:
            return
        if _RANK[st] < self._state("global") and "global" in self._watch.values():
            return  # a command for global is not acknowledged yet: the mirror may predate it
        if st == "ACTIVE":
            self.states.pop("global", None)
        else:
            self.states["global"] = (st, (fields.get(b"reason") or b"").decode()[:200])

    def describe(self) -> str:
        if not self.cfg.enabled:
            return "portfolio limits off"
        parts = []
        for scope, (st, why) in sorted(self.states.items()):
            parts.append(f"{scope} {st} ({why[:160]})")
        head = "portfolio: " + ("; ".join(parts) if parts else "within limits")
        if self.blocked:
            head += "; blocked " + ", ".join(f"{k}={v}" for k, v in sorted(self.blocked.items()))
        return head

    # -- the background task ---------------------------------------------------------------
    async def load(self, r: Any) -> None:
        """Continue from the stored state (call before the engine consumes anything)."""
        try:
            self.restore(await r.hgetall(PORTFOLIO_STATE_KEY))
        except Exception as e:  # noqa: BLE001 - start fresh rather than not at all
            log.warning("portfolio: could not read %s: %s", PORTFOLIO_STATE_KEY, e)

    async def run(self, service: Any) -> None:
        """Evaluate on every poke and every ``check_interval_s``; publish commands; watch acks.

        ``service`` is the running ``Service`` (its ``redis``, ``stopping``, ``count``)."""
        r = service.redis
        cursors: dict[str, bytes] = {}
        for stream in (streams.CONTROL, streams.CONTROL_ACKS):
            try:
                last = await r.xrevrange(stream, count=1)
                cursors[stream] = last[0][0] if last else b"0-0"
            except Exception:  # noqa: BLE001
                cursors[stream] = b"0-0"
        watcher = asyncio.create_task(self._watch_acks(service, cursors), name="strategy_engine.portfolio.acks")
        try:
            while not service.stopping.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.cfg.check_interval_s)
                except TimeoutError:
                    pass
                self._wake.clear()
                try:
                    self.on_global_mirror(await r.hgetall(streams.KILL_STATE))
                except Exception as e:  # noqa: BLE001 - the mirror is advisory
                    log.debug("portfolio: gateway state mirror unreadable: %s", e)
                for ctl in self.evaluate():
                    service.count(f"portfolio_breaches.{ctl.args.get('limit', '?')}")
                await self.flush(r, streams.stats_key(service.name))
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def flush(self, r: Any, stats_key: str | None = None) -> None:
        """Publish queued commands, count them in ``stats_key`` and persist the state when it changed,
        in one transaction (all kept for a retry on error)."""
        try:
            if self.outbox or self.dirty:
                pipe = r.pipeline(transaction=True)
                for ctl in self.outbox:
                    pipe.xadd(streams.CONTROL, {b"d": encode(ctl)}, maxlen=100_000, approximate=True)
                if stats_key:
                    for name, n in self._breach_counts.items():
                        pipe.hincrby(stats_key, name, n)
                pipe.hset(PORTFOLIO_STATE_KEY, mapping=self.dump())
                await pipe.execute()
                self.outbox.clear()
                self._breach_counts.clear()
                self.dirty = False
        except Exception as e:  # noqa: BLE001 - Redis away: retried on the next evaluation
            log.warning("portfolio: could not publish %d command(s) / persist: %s", len(self.outbox), e)

    async def _watch_acks(self, service: Any, cursors: dict[str, bytes]) -> None:
        r = service.redis
        while not service.stopping.is_set():
            try:
                resp = await r.xread(cursors, count=200, block=500)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis away: try again shortly
                await asyncio.sleep(0.5)
                continue
            for stream, items in resp or []:
                name = stream.decode() if isinstance(stream, bytes) else stream
                for eid, fields in items:
                    cursors[name] = eid
                    raw = fields.get(b"d", b"")
                    try:
                        if name == streams.CONTROL:
                            self.on_command(decode_as(raw, Control))
                        else:
                            self.on_ack(decode_as(raw, ControlAck))
                    except Exception:  # noqa: BLE001, S112 - not ours to judge; the gateway dead-letters it
                        continue
