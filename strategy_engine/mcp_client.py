"""The strategy engine's MCP client: reads the broker account over streamable HTTP.

Errors are translated at this boundary into two exceptions named for the caller's next
step: ``BrokerUnavailable`` (cannot reach the server, timed out, connection dropped —
retry later, the context goes stale meanwhile) and ``BrokerError`` (the server answered
with a tool error, a protocol error or an unexpected shape — retrying at once will not
help; check configuration). Both subclass ``BrokerClientError``.

Each call opens a short MCP session (the SDK negotiates the protocol version, falling
back to the initialize handshake for older servers), makes its tool calls and closes it:
the engine refreshes every few seconds, so a dropped connection never poisons later calls.

Pointing it at a real broker's MCP server needs configuration only::

    AITRADER_SE_MCP_URL=https://broker.example.com/mcp      # the server's streamable-HTTP endpoint
    AITRADER_SE_MCP_AUTH_HEADER=Authorization                 # header the server expects
    AITRADER_SE_MCP_AUTH_SECRET="Bearer <access token>"       # sent on every request (never logged)
    AITRADER_SE_MCP_TIMEOUT_S=5

The server must expose Kite-named tools (``get_margins``, ``get_positions``,
``get_holdings``) answering Kite Connect shaped JSON (as text or structured content;
numbers or decimal strings both parse exactly). A server that needs an interactive
browser login per session cannot be driven by configuration alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, CallToolResult, Implementation

from strategy_engine.account import AccountSnapshot, SnapshotError

__all__ = ["BrokerClientError", "BrokerError", "BrokerUnavailable", "McpBrokerClient"]

T = TypeVar("T")


class BrokerClientError(Exception):
    """Base of the MCP client's errors."""


class BrokerUnavailable(BrokerClientError):
    """The broker's MCP server cannot be reached or did not answer in time; retry later."""


class BrokerError(BrokerClientError):
    """The broker answered with an error or an unexpected shape; retrying at once will not help."""


def _leaf(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        # Prefer our own errors, then the first cause of the group.
        ours = [x for x in e.exceptions if isinstance(x, BrokerClientError)]
        e = ours[0] if ours else e.exceptions[0]
    return e


def _payload(tool: str, result: CallToolResult) -> Any:
    text = "".join(getattr(c, "text", "") for c in result.content or [])
    if result.is_error:
        raise BrokerError(f"{tool}: {text[:500] or 'tool error'}")
    sc = result.structured_content
    if sc is not None:
        sc = sc["result"] if set(sc) == {"result"} else sc
        if not isinstance(sc, str):
            return sc
        text = sc  # a tool that returns JSON text, wrapped by the SDK
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError as e:
        raise BrokerError(f"{tool}: answer is not JSON: {text[:200]!r}") from e


class McpBrokerClient:
    """Calls a broker's MCP tools over streamable HTTP; see the module docstring for configuration."""

    def __init__(
        self,
        url: str,
        *,
        auth_header: str = "Authorization",
        auth_secret: str = "",
        timeout_s: float = 5.0,
        client_name: str = "aitrader-strategy-engine",
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._headers = {auth_header: auth_secret} if auth_secret else {}
        self._info = Implementation(name=client_name, version="1")

    def __repr__(self) -> str:  # never shows the secret
        return f"McpBrokerClient({self.url!r})"

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Client]:
        timeout = httpx2.Timeout(self.timeout_s)
        async with httpx2.AsyncClient(headers=self._headers, timeout=timeout) as http:
            transport = streamable_http_client(self.url, http_client=http)
            async with Client(
                transport, cache=None, read_timeout_seconds=self.timeout_s, client_info=self._info
            ) as client:
                yield client

    async def _run(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._session() as client:
                    return await fn(client)
        except BrokerClientError:
            raise
        except TimeoutError as e:
            raise BrokerUnavailable(f"{self.url}: no answer within {self.timeout_s:g}s") from e
        except Exception as e:
            leaf = _leaf(e)
            if isinstance(leaf, BrokerClientError):
                raise leaf from e
            if isinstance(leaf, SnapshotError):
                raise BrokerError(f"{self.url}: {leaf}") from e
            if isinstance(leaf, MCPError) and leaf.code != CONNECTION_CLOSED:
                raise BrokerError(f"{self.url}: MCP error {leaf.code}: {leaf}") from e
            raise BrokerUnavailable(f"{self.url}: {type(leaf).__name__}: {leaf}") from e

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> Any:
        """Call one tool; return its JSON payload (decimals as ``Decimal`` where the server sent numbers)."""
        return (await self.call_many([(tool, arguments or {})]))[0]

    async def call_many(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Call several tools in one session, in order; return their payloads."""

        async def go(client: Client) -> list[Any]:
            out = []
            for tool, args in calls:
                out.append(_payload(tool, await client.call_tool(tool, args)))
            return out

        return await self._run(go)

    async def snapshot(self) -> AccountSnapshot:
        """Margins, positions and holdings in one session, as an ``AccountSnapshot``."""

        async def go(client: Client) -> AccountSnapshot:
            margins = _payload("get_margins", await client.call_tool("get_margins", {}))
            positions = _payload("get_positions", await client.call_tool("get_positions", {}))
            holdings = _payload("get_holdings", await client.call_tool("get_holdings", {}))
            return AccountSnapshot.from_kite(margins, positions, holdings)

        return await self._run(go)
