"""Venue adapters behind one port (``Venue``), chosen by name from settings."""

from __future__ import annotations

from collections.abc import Callable

from common.config import CommonSettings, ConfigError, load
from common.instruments import Instruments
from execution.config import ExecutionSettings
from execution.venues.base import (
    EventKind,
    Reconciliation,
    ReconciliationFailed,
    Venue,
    VenueEvent,
    VenueOrder,
)
from execution.venues.simulator import SimulatedVenue

__all__ = [
    "VENUES", "EventKind", "Reconciliation", "ReconciliationFailed", "SimulatedVenue", "Venue", "VenueEvent",
    "VenueOrder", "build_venue",
]


def _simulator(settings: ExecutionSettings, instruments: Instruments, common: CommonSettings | None) -> Venue:
    return SimulatedVenue(
        instruments,
        slippage_bps=settings.slippage_bps,
        fee_bps=settings.fee_bps,
        min_fee=settings.min_fee,
        ring_size=settings.tick_ring,
        latency_ms=settings.sim_latency_ms,
    )


def _mcp(settings: ExecutionSettings, instruments: Instruments, common: CommonSettings | None) -> Venue:
    if not settings.mcp_url:
        raise ConfigError("invalid setting AITRADER_EX_MCP_URL: required when AITRADER_EX_VENUE=mcp")
    from execution.venues.mcp_broker import McpBrokerVenue  # the MCP SDK only when it is used
    from strategy_engine.mcp_client import client_from_settings

    return McpBrokerVenue(
        settings.mcp_url,
        auth_header=settings.mcp_auth_header,
        auth_secret=settings.mcp_auth_secret,
        timeout_s=settings.mcp_timeout_s,
        poll_ms=settings.mcp_poll_ms,
        fee_bps=settings.fee_bps,
        min_fee=settings.min_fee,
        # With a login its session tokens are stored encrypted in the database of ``common``.
        client=client_from_settings(settings, common or load(CommonSettings), "aitrader-execution"),
    )


VENUES: dict[str, Callable[[ExecutionSettings, Instruments, CommonSettings | None], Venue]] = {"simulator": _simulator, "mcp": _mcp}


def build_venue(settings: ExecutionSettings, instruments: Instruments, common: CommonSettings | None = None) -> Venue:
    """The venue named by ``AITRADER_EX_VENUE``."""
    try:
        factory = VENUES[settings.venue]
    except KeyError:
        raise ConfigError(
            f"invalid setting AITRADER_EX_VENUE: unknown venue {settings.venue!r} (known: {sorted(VENUES)})"
        ) from None
    return factory(settings, instruments, common)
