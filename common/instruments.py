"""Instrument reference data (lot and tick sizes) from ``config/instruments.yml``."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import yaml

from common.config import ConfigError

__all__ = ["Instrument", "Instruments", "DEFAULT_PATH"]

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "config" / "instruments.yml"


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    lot_size: Decimal
    tick_size: Decimal

    def round_qty(self, qty: Decimal) -> Decimal:
        """Round a quantity down to a whole number of lots."""
        return (qty / self.lot_size).to_integral_value(rounding=ROUND_DOWN) * self.lot_size

    def is_lot_multiple(self, qty: Decimal) -> bool:
        return (qty % self.lot_size) == 0

    def is_tick_multiple(self, price: Decimal) -> bool:
        return (price % self.tick_size) == 0


class Instruments:
    """Lookup of instruments by symbol, falling back to the default entry."""

    def __init__(self, default: Instrument, symbols: dict[str, Instrument]) -> None:
        self._default = default
        self._symbols = symbols

    @classmethod
    def load(cls, path: Path | str | None = None) -> "Instruments":
        p = Path(path) if path else DEFAULT_PATH
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"instruments file {p}: {e}") from e

        def parse(sym: str, d: dict, where: str) -> Instrument:
            try:
                lot, tick = Decimal(str(d["lot_size"])), Decimal(str(d["tick_size"]))
            except Exception as e:  # noqa: BLE001 - any malformed entry is a config error
                raise ConfigError(f"instruments file {p}: {where} needs lot_size and tick_size ({e})") from e
            if not (lot.is_finite() and tick.is_finite()) or lot <= 0 or tick <= 0:
                raise ConfigError(f"instruments file {p}: {where} lot_size and tick_size must be > 0")
            return Instrument(sym, lot, tick)

        default = parse("*", doc.get("default") or {"lot_size": "1", "tick_size": "0.01"}, "default")
        symbols = {s: parse(s, d or {}, f"symbols.{s}") for s, d in (doc.get("symbols") or {}).items()}
        return cls(default, symbols)

    def get(self, symbol: str) -> Instrument:
        inst = self._symbols.get(symbol)
        if inst is None:
            d = self._default
            inst = Instrument(symbol, d.lot_size, d.tick_size)
        return inst
