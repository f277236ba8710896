"""Pre-trade risk checks: pure, fast, one reason code per rejection.

Every order intent passes ``RiskEngine.check`` before it can reach a venue. A rejection is
a ``RejectCode`` (an event the OMS records and reports), never an exception. Limits come
from ``config/risk.yml`` (defaults plus per-symbol overrides), validated at start: a bad or
missing key raises ``ConfigError`` naming it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from common.config import ConfigError
from common.instruments import Instruments
from common.messages import OrderIntent, OrdType

__all__ = ["LIMIT_KEYS", "RejectCode", "RiskConfig", "RiskEngine", "RiskLimits"]

_BPS = Decimal(10_000)
_ZERO = Decimal(0)


class RejectCode(enum.StrEnum):
    """Why an order was refused (``ExecutionReport.reason``, counter ``rejects.<CODE>``)."""

    KILL_SWITCH = "KILL_SWITCH"  # trading halted
    DUPLICATE_CLORDID = "DUPLICATE_CLORDID"  # client order id seen before
    INVALID_QTY = "INVALID_QTY"  # <= 0, not finite or not a whole number of lots
    INVALID_PRICE = "INVALID_PRICE"  # limit / stop / reference price missing, <= 0 or off the tick grid
    UNSUPPORTED_ORDER_TYPE = "UNSUPPORTED_ORDER_TYPE"  # an order type the gateway does not implement
    MAX_QTY = "MAX_QTY"
    MAX_NOTIONAL = "MAX_NOTIONAL"  # qty x reference price
    NO_REFERENCE_PRICE = "NO_REFERENCE_PRICE"  # no mark for the symbol yet: fail closed
    PRICE_COLLAR = "PRICE_COLLAR"  # intent / limit price too far from the gateway's reference price
    POSITION_LIMIT = "POSITION_LIMIT"  # |position + open same-side orders + order| beyond the limit
    CASH = "CASH"  # buy notional + fee beyond cash minus open buy orders


LIMIT_KEYS = ("max_order_qty", "max_order_notional", "price_collar_bps", "max_position_qty", "max_position_notional")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits for one symbol (all > 0; quantities in instrument units, notionals in account currency)."""

    max_order_qty: Decimal
    max_order_notional: Decimal
    price_collar_bps: Decimal
    max_position_qty: Decimal
    max_position_notional: Decimal


def _decimal(value: Any, where: str, path: Path) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ConfigError(f"risk file {path}: {where} must be a number, got {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation as e:
        raise ConfigError(f"risk file {path}: {where} must be a number, got {value!r}") from e
    if not d.is_finite() or d <= 0:
        raise ConfigError(f"risk file {path}: {where} must be a finite number > 0, got {value!r}")
    return d


def _sane(x: Decimal) -> bool:
    # Finite, > 0 and below 1e18 (beyond that, lot/tick arithmetic raises and storage overflows).
    return x.is_finite() and x > _ZERO and x.adjusted() < 18


class RiskConfig:
    """Validated limits: ``defaults`` for every symbol, overridden per symbol under ``symbols``."""

    def __init__(self, defaults: RiskLimits, symbols: dict[str, RiskLimits] | None = None) -> None:
        self.defaults = defaults
        self.symbols = dict(symbols or {})

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
            raise ConfigError(f"risk file {p}: expected a mapping with 'defaults' and 'symbols'")
        unknown = set(doc) - {"defaults", "symbols"}
        if unknown:
            raise ConfigError(f"risk file {p}: unknown top-level key {min(unknown)!r}")
        d = doc.get("defaults")
        if not isinstance(d, dict):
            raise ConfigError(f"risk file {p}: missing key 'defaults'")
        for k in d:
            if k not in LIMIT_KEYS:
                raise ConfigError(f"risk file {p}: unknown key 'defaults.{k}'")
        for k in LIMIT_KEYS:
            if k not in d:
                raise ConfigError(f"risk file {p}: missing key 'defaults.{k}'")
        defaults = RiskLimits(**{k: _decimal(d[k], f"defaults.{k}", p) for k in LIMIT_KEYS})
        symbols: dict[str, RiskLimits] = {}
        for sym, over in (doc.get("symbols") or {}).items():
            if not isinstance(over, dict):
                raise ConfigError(f"risk file {p}: 'symbols.{sym}' must be a mapping of limits")
            for k in over:
                if k not in LIMIT_KEYS:
                    raise ConfigError(f"risk file {p}: unknown key 'symbols.{sym}.{k}'")
            symbols[str(sym)] = replace(
                defaults, **{k: _decimal(v, f"symbols.{sym}.{k}", p) for k, v in over.items()}
            )
        return cls(defaults, symbols)

    def as_dict(self) -> dict[str, Any]:
        def row(lim: RiskLimits) -> dict[str, str]:
            return {f.name: str(getattr(lim, f.name)) for f in fields(lim)}

        return {"defaults": row(self.defaults), "symbols": {s: row(v) for s, v in self.symbols.items()}}


class RiskEngine:
    """Runs the pre-trade checks in a fixed order; the first failing check gives the code."""

    def __init__(self, config: RiskConfig, instruments: Instruments, fee_of: Callable[[Decimal], Decimal]) -> None:
        self.config = config
        self.instruments = instruments
        self.fee_of = fee_of  # estimated fee of a fill of a given notional (the venue's fee model)

    def check(
        self,
        intent: OrderIntent,
        *,
        halted: bool,
        known: bool,
        mark: Decimal | None,
        position: Decimal,
        open_same_side: Decimal,
        cash: Decimal,
        open_buy_notional: Decimal,
    ) -> RejectCode | None:
        """The reject code for ``intent``, or None when it may be routed.

        ``mark`` is the gateway's own last reference price of the symbol; ``position`` the
        signed net position; ``open_same_side`` the unfilled quantity of open and in-flight
        orders on the intent's side; ``open_buy_notional`` the reserved notional of open buys.
        """
        # A duplicate is answered first: its id already has a row, so it cannot get another.
        if known:
            return RejectCode.DUPLICATE_CLORDID
        if halted:
            return RejectCode.KILL_SWITCH
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
        if mark is None or mark <= _ZERO:
            return RejectCode.NO_REFERENCE_PRICE
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
        projected = abs(position + intent.side * (open_same_side + qty))
        if projected > lim.max_position_qty or projected * mark > lim.max_position_notional:
            return RejectCode.POSITION_LIMIT
        if intent.side > 0 and notional + self.fee_of(notional) > cash - open_buy_notional:
            return RejectCode.CASH
        return None

    def notional(self, intent: OrderIntent, mark: Decimal) -> Decimal:
        """The notional the checks valued the order at (reserved while it is open)."""
        limit_px = {OrdType.LIMIT: intent.limit_price, OrdType.STOP: intent.stop_price}.get(intent.order_type)
        px = mark if limit_px is None or intent.side < 0 else max(mark, limit_px)
        return intent.qty * px
