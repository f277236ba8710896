"""Pre-trade risk checks: fast, one reason code per rejection.

Every new order intent passes ``RiskEngine.check`` before it can reach a venue. A rejection
is a ``RejectCode`` (an event the OMS records and reports), never an exception. Limits come
from ``config/risk.yml`` (global limits, defaults plus per-symbol overrides), validated at
start: a bad or missing key raises ``ConfigError`` naming it.

The checks are pure except for the two throttles (``Throttle``, sliding one-second windows
on the engine's injectable clock): ``check`` takes a message slot for every order message it
sees and an order slot for every order it lets through. Only new orders go through
``check``: a cancel (the kill switch's, or any later cancel command) must never call it, so
cancels are never throttled and never use up a slot.

Limits can change while the gateway runs: ``risk.set`` / ``risk.unset`` commands (``aitrader
risk set KEY VALUE``, ``PUT /risk``) name one key of the file by its dotted path
(``global.max_open_orders``, ``defaults.max_order_qty``, ``symbols.BTCUSDT.max_position_qty``,
``kill_triggers.daily_loss``). ``RiskConfig.with_override`` applies it to the file's own
document and validates the result exactly as the file is validated at start, so an override
can never make a limit the file could not hold; the gateway keeps the overrides in the
database (``risk_overrides``) and applies them over the file on every start.
"""

from __future__ import annotations

import copy
import enum
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from common.config import ConfigError
from common.instruments import Instruments
from common.messages import OrderIntent, OrdType
from execution.triggers import TRIGGER_KEYS, TriggerConfig, number

__all__ = [
    "GLOBAL_KEYS",
    "LIMIT_KEYS",
    "GlobalLimits",
    "RejectCode",
    "RiskConfig",
    "RiskEngine",
    "RiskLimits",
    "Throttle",
    "override_value",
    "parse_override_key",
]

_BPS = Decimal(10_000)
_ZERO = Decimal(0)


class RejectCode(enum.StrEnum):
    """Why an order was refused (``ExecutionReport.reason``, counter ``rejects.<CODE>``)."""

    KILL_SWITCH = "KILL_SWITCH"  # trading halted (globally, for the strategy or for the symbol)
    REDUCING_ONLY = "REDUCING_ONLY"  # a REDUCING scope: the order would not reduce the symbol's |position|
    DUPLICATE_CLORDID = "DUPLICATE_CLORDID"  # client order id seen before, same parameters: answered with its state
    DUPLICATE_CLORDID_MISMATCH = "DUPLICATE_CLORDID_MISMATCH"  # id seen before with other parameters: refused
    MESSAGE_RATE = "MESSAGE_RATE"  # more than max_messages_per_sec order messages in the last second
    RESTRICTED_SYMBOL = "RESTRICTED_SYMBOL"  # symbol listed in global.restricted_symbols
    INVALID_QTY = "INVALID_QTY"  # <= 0, not finite or not a whole number of lots
    INVALID_PRICE = "INVALID_PRICE"  # limit / stop / reference price missing, <= 0 or off the tick grid
    UNSUPPORTED_ORDER_TYPE = "UNSUPPORTED_ORDER_TYPE"  # an order type the gateway does not implement
    MAX_QTY = "MAX_QTY"  # order quantity beyond max_order_qty
    MAX_OPEN_ORDERS = "MAX_OPEN_ORDERS"  # the gateway already has global.max_open_orders open orders
    NO_REFERENCE_PRICE = "NO_REFERENCE_PRICE"  # no mark for the symbol yet: fail closed
    STALE_REFERENCE_PRICE = "STALE_REFERENCE_PRICE"  # the mark arrived more than max_mark_age_ms ago: fail closed
    MAX_NOTIONAL = "MAX_NOTIONAL"  # qty x reference price beyond max_order_notional
    PRICE_COLLAR = "PRICE_COLLAR"  # intent / limit price too far from the gateway's reference price
    POSITION_LIMIT = "POSITION_LIMIT"  # |position + open same-side orders + order| beyond the limit
    GROSS_EXPOSURE = "GROSS_EXPOSURE"  # sum over symbols of |position + open orders| x mark beyond the global cap
    CASH = "CASH"  # buy notional + fee beyond cash minus open buy orders
    ORDER_RATE = "ORDER_RATE"  # more than max_orders_per_sec new orders forwarded in the last second


LIMIT_KEYS = (
    "max_order_qty", "max_order_notional", "price_collar_bps", "max_position_qty", "max_position_notional",
    "max_mark_age_ms",
)
GLOBAL_KEYS = (
    "max_gross_notional", "max_open_orders", "max_orders_per_sec", "max_messages_per_sec", "restricted_symbols",
)
_COUNT_KEYS = ("max_open_orders", "max_orders_per_sec", "max_messages_per_sec")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits for one symbol (all > 0; quantities in instrument units, notionals in account currency)."""

    max_order_qty: Decimal
    max_order_notional: Decimal
    price_collar_bps: Decimal
    max_position_qty: Decimal
    max_position_notional: Decimal
    max_mark_age_ms: Decimal


@dataclass(frozen=True, slots=True)
class GlobalLimits:
    """Limits over the whole gateway (counts are whole numbers > 0)."""

    max_gross_notional: Decimal
    max_open_orders: int
    max_orders_per_sec: int
    max_messages_per_sec: int
    restricted_symbols: frozenset[str]


def _decimal(value: Any, where: str, path: Path) -> Decimal:
    d = number(value, where, path)
    if not d.is_finite() or d <= 0:
        raise ConfigError(f"risk file {path}: {where} must be a finite number > 0, got {value!r}")
    return d


def _count(value: Any, where: str, path: Path) -> int:
    d = _decimal(value, where, path)
    if d != d.to_integral_value() or d > 10**9:
        raise ConfigError(f"risk file {path}: {where} must be a whole number in 1..1e9, got {value!r}")
    return int(d)


def _check_keys(section: dict, where: str, keys: tuple[str, ...], p: Path, *, required: bool = True) -> None:
    """``section`` (at ``where`` in the file) holds only ``keys`` — and, when ``required``, all of them."""
    for k in section:
        if k not in keys:
            raise ConfigError(f"risk file {p}: unknown key '{where}.{k}'")
    for k in keys if required else ():
        if k not in section:
            raise ConfigError(f"risk file {p}: missing key '{where}.{k}'")


def _global(g: Any, p: Path) -> GlobalLimits:
    if not isinstance(g, dict):
        raise ConfigError(f"risk file {p}: missing key 'global'")
    _check_keys(g, "global", GLOBAL_KEYS, p)
    restricted = g["restricted_symbols"]
    if restricted is None:
        restricted = []
    if not isinstance(restricted, list) or not all(isinstance(x, str) and x for x in restricted):
        raise ConfigError(f"risk file {p}: global.restricted_symbols must be a list of symbols, got {restricted!r}")
    counts = {k: _count(g[k], f"global.{k}", p) for k in _COUNT_KEYS}
    return GlobalLimits(
        max_gross_notional=_decimal(g["max_gross_notional"], "global.max_gross_notional", p),
        restricted_symbols=frozenset(restricted),
        **counts,
    )


def _sane(x: Decimal) -> bool:
    # Finite, > 0 and below 1e18 (beyond that, lot/tick arithmetic raises and storage overflows).
    return x.is_finite() and x > _ZERO and x.adjusted() < 18


class RiskConfig:
    """Validated limits: ``global`` ones, ``defaults`` for every symbol, overridden under ``symbols``."""

    def __init__(
        self, glob: GlobalLimits, defaults: RiskLimits, symbols: dict[str, RiskLimits] | None = None,
        triggers: TriggerConfig | None = None,
    ) -> None:
        self.glob = glob
        self.defaults = defaults
        self.symbols = dict(symbols or {})
        self.triggers = triggers if triggers is not None else TriggerConfig()
        self.source: Path = Path("<dict>")  # where the document came from
        self.doc: dict[str, Any] | None = None  # the document before overrides (from_dict)
        self.overrides: dict[str, str] = {}  # dotted key -> value as given, applied over ``doc``

    def limits(self, symbol: str) -> RiskLimits:
        return self.symbols.get(symbol, self.defaults)

    @classmethod
    def load(cls, path: Path | str) -> RiskConfig:
        """Read and validate the YAML file; raise ``ConfigError`` naming the bad or missing key."""
        p = Path(path)
        try:
            doc = yaml.safe_load(p.read_text())
        except OSError as e:
            raise ConfigError(f"risk file {p}: cannot read ({e}); set AITRADER_EX_RISK_FILE") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"risk file {p}: invalid YAML ({e})") from e
        return cls.from_dict(doc, p)

    @classmethod
    def from_dict(cls, doc: Any, path: Path | str = "<dict>") -> RiskConfig:
        p = Path(path)
        if not isinstance(doc, dict):
            raise ConfigError(f"risk file {p}: expected a mapping with 'global', 'defaults' and 'symbols'")
        unknown = set(doc) - {"global", "defaults", "symbols", "kill_triggers"}
        if unknown:
            raise ConfigError(f"risk file {p}: unknown top-level key {min(unknown)!r}")
        d = doc.get("defaults")
        if not isinstance(d, dict):
            raise ConfigError(f"risk file {p}: missing key 'defaults'")
        _check_keys(d, "defaults", LIMIT_KEYS, p)
        defaults = RiskLimits(**{k: _decimal(d[k], f"defaults.{k}", p) for k in LIMIT_KEYS})
        symbols: dict[str, RiskLimits] = {}
        for sym, over in (doc.get("symbols") or {}).items():
            if not isinstance(over, dict):
                raise ConfigError(f"risk file {p}: 'symbols.{sym}' must be a mapping of limits")
            _check_keys(over, f"symbols.{sym}", LIMIT_KEYS, p, required=False)
            symbols[str(sym)] = replace(
                defaults, **{k: _decimal(v, f"symbols.{sym}.{k}", p) for k, v in over.items()}
            )
        triggers = TriggerConfig.from_dict(doc.get("kill_triggers"), p)
        cfg = cls(_global(doc.get("global"), p), defaults, symbols, triggers)
        cfg.source = p
        cfg.doc = copy.deepcopy(doc)
        return cfg

    def with_overrides(self, overrides: dict[str, str]) -> RiskConfig:
        """This file's limits with ``overrides`` (dotted key -> value) applied, validated as the file is.

        Raises ``ConfigError`` naming the key when a key is not a limit or a value is not valid
        for it. The result remembers the document and the overrides, so overrides can be
        added or removed again later (``with_override``).
        """
        if self.doc is None:
            raise ConfigError("risk limits built without a document cannot take overrides")
        doc = copy.deepcopy(self.doc)
        for key, value in sorted(overrides.items()):
            section, sym, name = parse_override_key(key)
            if section == "symbols":
                syms = doc.get("symbols")
                if not isinstance(syms, dict):
                    syms = doc["symbols"] = {}
                row = syms.get(sym)
                if not isinstance(row, dict):
                    row = syms[sym] = {}
                row[name] = override_value(key, value)
            else:
                sec = doc.get(section)
                if not isinstance(sec, dict):
                    sec = doc[section] = {}
                sec[name] = override_value(key, value)
        where = f"{self.source} with overrides" if overrides else self.source
        cfg = RiskConfig.from_dict(doc, where)
        cfg.source, cfg.doc, cfg.overrides = self.source, self.doc, dict(overrides)
        return cfg

    def with_override(self, key: str, value: str | None) -> RiskConfig:
        """These limits with ``key`` set to ``value`` (None: back to the file's value)."""
        over = dict(self.overrides)
        if value is None:
            over.pop(key, None)
        else:
            over[key] = value
        return self.with_overrides(over)

    def value_of(self, key: str) -> Any:
        """The effective value of a dotted key (as ``as_dict`` shows it), or None when unset."""
        section, sym, name = parse_override_key(key)
        d = self.as_dict()
        if section == "symbols":
            return d["symbols"].get(sym, d["defaults"]).get(name)
        return d[section].get(name)

    def as_dict(self) -> dict[str, Any]:
        def row(lim: RiskLimits) -> dict[str, str]:
            return {f.name: str(getattr(lim, f.name)) for f in fields(lim)}

        g = self.glob
        return {
            "global": {
                "max_gross_notional": str(g.max_gross_notional), "max_open_orders": g.max_open_orders,
                "max_orders_per_sec": g.max_orders_per_sec, "max_messages_per_sec": g.max_messages_per_sec,
                "restricted_symbols": sorted(g.restricted_symbols),
            },
            "defaults": row(self.defaults),
            "symbols": {s: row(v) for s, v in self.symbols.items()},
            "kill_triggers": self.triggers.as_dict(),
        }


_LIST_KEYS = {"global.restricted_symbols", "kill_triggers.upstream_services"}
_SECTIONS = {"global": GLOBAL_KEYS, "defaults": LIMIT_KEYS, "kill_triggers": TRIGGER_KEYS}
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
_OFF = {"off", "null", "none"}


def parse_override_key(key: str) -> tuple[str, str, str]:
    """``(section, symbol, name)`` of a dotted risk key (symbol is '' outside ``symbols``).

    Raises ``ConfigError`` naming the key when it is not one of the file's limits.
    """
    if not isinstance(key, str) or len(key) > 160:
        raise ConfigError(f"risk key {str(key)[:160]!r}: not a risk limit")
    if key.startswith("symbols."):
        sym, _, name = key[len("symbols."):].rpartition(".")
        if not _SYMBOL_RE.match(sym) or name not in LIMIT_KEYS:
            raise ConfigError(f"risk key {key!r}: expected symbols.<SYMBOL>.<one of {', '.join(LIMIT_KEYS)}>")
        return "symbols", sym, name
    section, _, name = key.partition(".")
    if section not in _SECTIONS or name not in _SECTIONS[section]:
        raise ConfigError(
            f"risk key {key!r}: not a risk limit (global.<key>, defaults.<key>, symbols.<SYMBOL>.<key> or "
            f"kill_triggers.<key>; see config/risk.yml)"
        )
    return section, "", name


def override_value(key: str, value: str) -> Any:
    """The document value of an override given as text: lists comma-separated ('' or '-' for
    none), 'off' / 'null' / 'none' for a disabled kill trigger, anything else as given (the
    file's validation then checks it as it checks the file)."""
    if not isinstance(value, str) or len(value) > 4096:
        raise ConfigError(f"risk key {key!r}: value must be text of at most 4096 characters")
    v = value.strip()
    if key in _LIST_KEYS:
        return [] if v in ("", "-") else [x.strip() for x in v.split(",") if x.strip()]
    if v.lower() in _OFF:
        return None
    return v


class Throttle:
    """At most ``limit`` events in any sliding window of ``window_ns`` (times from one monotonic clock).

    ``allow(now)`` takes a slot and answers True, or answers False and takes none: what is
    let through plus what is denied is what was asked.
    """

    __slots__ = ("_times", "limit", "window_ns")

    def __init__(self, limit: int, window_ns: int = 1_000_000_000) -> None:
        self.limit = limit
        self.window_ns = window_ns
        self._times: deque[int] = deque()

    def allow(self, now: int) -> bool:
        times = self._times
        edge = now - self.window_ns
        while times and times[0] <= edge:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True


class RiskEngine:
    """Runs the pre-trade checks in a fixed order; the first failing check gives the code."""

    def __init__(
        self,
        config: RiskConfig,
        instruments: Instruments,
        fee_of: Callable[[Decimal], Decimal],
        *,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.config = config
        self.instruments = instruments
        self.fee_of = fee_of  # estimated fee of a fill of a given notional (the venue's fee model)
        self.clock = clock  # the throttles' clock (ns, monotonic)
        g = config.glob
        self.messages = Throttle(g.max_messages_per_sec)  # every order message checked
        self.orders = Throttle(g.max_orders_per_sec)  # every new order let through
        self._max_age_ns: dict[str, int] = {}

    def reconfigure(self, config: RiskConfig) -> None:
        """Check against ``config`` from now on; the throttles keep their windows (only the limits change)."""
        self.config = config
        self.messages.limit = config.glob.max_messages_per_sec
        self.orders.limit = config.glob.max_orders_per_sec
        self._max_age_ns = {}

    def max_mark_age_ns(self, symbol: str) -> int:
        age = self._max_age_ns.get(symbol)
        if age is None:
            age = self._max_age_ns[symbol] = int(self.config.limits(symbol).max_mark_age_ms * 1_000_000)
        return age

    def check(
        self,
        intent: OrderIntent,
        *,
        halted: bool,
        mark: Decimal | None,
        position: Decimal,
        open_same_side: Decimal,
        cash: Decimal,
        open_buy_notional: Decimal,
        known: bool = False,
        mark_age_ns: int = 0,
        open_orders: int = 0,
        open_other_side: Decimal = _ZERO,
        gross_others: Decimal = _ZERO,
        reducing: bool = False,
    ) -> RejectCode | None:
        """The reject code for the new order ``intent``, or None when it may be routed.

        ``mark`` is the gateway's own last reference price of the symbol and ``mark_age_ns``
        how long ago it arrived; ``position`` the signed net position; ``open_same_side`` /
        ``open_other_side`` the unfilled quantity of open and in-flight orders on the intent's
        side / the other side; ``open_buy_notional`` the reserved notional of open buys;
        ``open_orders`` the gateway's open orders; ``gross_others`` the gross exposure of every
        other symbol (``Portfolio.gross_without``); ``reducing`` that a scope of the intent is
        REDUCING: only an order that brings the symbol's position towards zero without
        crossing it, counting open same-side orders, passes. Takes a message-throttle slot (unless
        halted or REDUCING_ONLY) and, when it returns None, an order-throttle slot: call it once per new order,
        never for a cancel.
        """
        # A duplicate is answered first: its id already has a row, so it cannot get another.
        if known:
            return RejectCode.DUPLICATE_CLORDID
        if halted:
            return RejectCode.KILL_SWITCH
        # Reducing: opposite side to the position, and this order plus the open same-side ones fit in it.
        if reducing and (intent.side * position >= _ZERO or open_same_side + intent.qty > abs(position)):
            return RejectCode.REDUCING_ONLY
        now = self.clock()
        if not self.messages.allow(now):
            return RejectCode.MESSAGE_RATE
        glob = self.config.glob
        if intent.symbol in glob.restricted_symbols:
            return RejectCode.RESTRICTED_SYMBOL
        qty = intent.qty
        inst = self.instruments.get(intent.symbol)
        if not _sane(qty) or not inst.is_lot_multiple(qty):
            return RejectCode.INVALID_QTY
        limit_px = None
        if intent.order_type == OrdType.LIMIT:
            limit_px = intent.limit_price
            if limit_px is None or not _sane(limit_px) or not inst.is_tick_multiple(limit_px):
                return RejectCode.INVALID_PRICE
        elif intent.order_type == OrdType.STOP:
            # A stop fills as a market order once triggered; a buy stop is valued at its stop if above the mark.
            limit_px = intent.stop_price
            if limit_px is None or not _sane(limit_px) or not inst.is_tick_multiple(limit_px):
                return RejectCode.INVALID_PRICE
        elif intent.order_type != OrdType.MARKET:
            return RejectCode.UNSUPPORTED_ORDER_TYPE
        if not _sane(intent.ref_price):
            return RejectCode.INVALID_PRICE
        ref = intent.ref_price
        lim = self.config.limits(intent.symbol)
        if qty > lim.max_order_qty:
            return RejectCode.MAX_QTY
        if open_orders >= glob.max_open_orders:
            return RejectCode.MAX_OPEN_ORDERS
        if mark is None or mark <= _ZERO:
            return RejectCode.NO_REFERENCE_PRICE
        if mark_age_ns > self.max_mark_age_ns(intent.symbol):
            return RejectCode.STALE_REFERENCE_PRICE
        band = lim.price_collar_bps * mark
        if abs(ref - mark) * _BPS > band:
            return RejectCode.PRICE_COLLAR
        if limit_px is not None and intent.order_type == OrdType.LIMIT and abs(limit_px - mark) * _BPS > band:
            return RejectCode.PRICE_COLLAR
        # A buy limit above the mark may fill up to its limit: value it at the worse price.
        px = mark if limit_px is None or intent.side < 0 else max(mark, limit_px)
        notional = qty * px
        if notional > lim.max_order_notional:
            return RejectCode.MAX_NOTIONAL
        side = intent.side
        projected = abs(position + side * (open_same_side + qty))
        if projected > lim.max_position_qty or projected * mark > lim.max_position_notional:
            return RejectCode.POSITION_LIMIT
        # The symbol's worst case: every open order on one side fills (the order's side or the other).
        worst = max(projected, abs(position - side * open_other_side))
        if gross_others + worst * mark > glob.max_gross_notional:
            return RejectCode.GROSS_EXPOSURE
        if side > 0 and notional + self.fee_of(notional) > cash - open_buy_notional:
            return RejectCode.CASH
        # Last, so that only an order that is let through takes an order slot.
        if not self.orders.allow(now):
            return RejectCode.ORDER_RATE
        return None

    def notional(self, intent: OrderIntent, mark: Decimal) -> Decimal:
        """The notional the checks valued the order at (reserved while it is open)."""
        limit_px = {OrdType.LIMIT: intent.limit_price, OrdType.STOP: intent.stop_price}.get(intent.order_type)
        px = mark if limit_px is None or intent.side < 0 else max(mark, limit_px)
        return intent.qty * px
