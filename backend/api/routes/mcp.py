"""``/mcp/*`` (trader and up): the broker account, read through the broker's MCP server.

The strategy engine's MCP client (``strategy_engine.mcp_client``, configured by the same
``AITRADER_SE_MCP_*`` settings: URL, fixed token or login with its encrypted session store)
calls one read tool per request and the answer is the broker's JSON as it came, numbers
exact. Read only: the tools are a fixed list of reads; nothing here can place, modify or
cancel an order. Account data is the trader's business, so viewers get 403.

A tool error, a refused login or an unexpected answer is 502 (``bad_gateway``); a broker
that cannot be reached or does not answer within ``AITRADER_SE_MCP_TIMEOUT_S`` is 503.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response

from backend.api.deps import ApiContext, Caller, require
from backend.api.errors import ApiError
from common.config import ConfigError, load

__all__ = ["MAX_QUOTE_SYMBOLS", "READ_TOOLS", "BrokerReader", "install", "router"]

# route -> the broker's tool; the only tools this module ever calls
READ_TOOLS = {"profile": "get_profile", "margins": "get_margins", "holdings": "get_holdings",
              "positions": "get_positions", "orders": "get_orders", "trades": "get_trades", "quotes": "get_quotes"}
MAX_QUOTE_SYMBOLS = 50
_INSTRUMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:\-]{0,63}$")  # SYMBOL or EXCHANGE:SYMBOL
_json = msgspec.json.Encoder(decimal_format="number")

router = APIRouter(prefix="/mcp", tags=["broker account"])
Trader = Annotated[Caller, Depends(require("trader"))]


class BrokerReader:
    """The API's MCP client, built on first use (a login misconfiguration is a 503 of these routes, not a
    refusal to start the API), reduced to ``READ_TOOLS``."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx
        self._client: Any = None

    def _get(self) -> Any:
        if self._client is None:
            from strategy_engine.config import StrategySettings
            from strategy_engine.mcp_client import client_from_settings

            try:
                self._client = client_from_settings(load(StrategySettings), self._ctx.common, "aitrader-api")
            except ConfigError as e:
                raise ApiError(503, f"broker client not configured: {e}") from e
        return self._client

    async def read(self, route: str, arguments: dict[str, Any] | None = None) -> Response:
        from strategy_engine.mcp_client import BrokerError, BrokerUnavailable

        client = self._get()
        try:
            payload = await client.call(READ_TOOLS[route], arguments or {})
        except BrokerUnavailable as e:
            raise ApiError(503, f"broker unreachable: {e}") from e
        except BrokerError as e:
            raise ApiError(502, f"broker error: {e}", details={"tool": READ_TOOLS[route]}) from e
        return Response(_json.encode(payload), media_type="application/json")


def install(app: FastAPI, ctx: ApiContext) -> None:
    app.state.broker = BrokerReader(ctx)


def _reader(request: Request) -> BrokerReader:
    return request.app.state.broker


Reader = Annotated[BrokerReader, Depends(_reader)]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the broker's answer, as its JSON (Kite Connect shapes)",
          "content": {"application/json": {"schema": {}}}},
    502: {"description": "the broker answered with an error (tool error, refused login, unexpected shape)"},
    503: {"description": "the broker's MCP server is unreachable, timed out, or the client is not configured"},
}


def _route(route: str, what: str) -> None:
    async def read(_caller: Trader, reader: Reader) -> Response:
        return await reader.read(route)

    read.__name__ = f"mcp_{route}"
    router.add_api_route(f"/{route}", read, methods=["GET"], response_class=Response, responses=_RESPONSES,
                         summary=f"{what} ({READ_TOOLS[route]}; trader)")


for _r, _what in (("profile", "The account holder's profile"), ("margins", "Funds and margins"),
                  ("holdings", "Delivery holdings"), ("positions", "Net and day positions"),
                  ("orders", "The session's orders"), ("trades", "The session's fills")):
    _route(_r, _what)


@router.get("/quotes", response_class=Response, responses={
    **_RESPONSES, 422: {"description": "no symbol, too many, or one that is not SYMBOL / EXCHANGE:SYMBOL"}},
    summary="Quotes of some instruments (get_quotes; trader)")
async def mcp_quotes(
    _caller: Trader,
    reader: Reader,
    symbols: Annotated[str, Query(min_length=1, max_length=4000,
                                  description=f"comma-separated SYMBOL or EXCHANGE:SYMBOL, at most "
                                              f"{MAX_QUOTE_SYMBOLS}")],
) -> Response:
    names = [s.strip() for s in symbols.split(",") if s.strip()]
    bad = [s for s in names if not _INSTRUMENT.match(s)]
    if not names or bad or len(names) > MAX_QUOTE_SYMBOLS:
        why = (f"not an instrument: {bad[0][:70]!r}" if bad else
               "no symbol given" if not names else f"at most {MAX_QUOTE_SYMBOLS} symbols")
        raise ApiError(422, f"symbols: {why}", code="validation_error",
                       details=[{"loc": ["query", "symbols"], "msg": why, "type": "value_error"}])
    return await reader.read("quotes", {"instruments": names})
