"""Venue adapters behind one port (``Venue``), chosen by name from settings."""

from __future__ import annotations

from collections.abc import Callable

from common.config import ConfigError
from common.instruments import Instruments
from execution.config import ExecutionSettings
from execution.venues.base import EventKind, Venue, VenueEvent
from execution.venues.simulator import SimulatedVenue

__all__ = ["VENUES", "EventKind", "SimulatedVenue", "Venue", "VenueEvent", "build_venue"]


def _simulator(settings: ExecutionSettings, instruments: Instruments) -> Venue:
    return SimulatedVenue(
        instruments,
        slippage_bps=settings.slippage_bps,
        fee_bps=settings.fee_bps,
        min_fee=settings.min_fee,
        ring_size=settings.tick_ring,
    )


VENUES: dict[str, Callable[[ExecutionSettings, Instruments], Venue]] = {"simulator": _simulator}


def build_venue(settings: ExecutionSettings, instruments: Instruments) -> Venue:
    """The venue named by ``AITRADER_EX_VENUE``."""
    try:
        factory = VENUES[settings.venue]
    except KeyError:
        raise ConfigError(
            f"invalid setting AITRADER_EX_VENUE: unknown venue {settings.venue!r} (known: {sorted(VENUES)})"
        ) from None
    return factory(settings, instruments)
