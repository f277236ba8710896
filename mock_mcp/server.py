"""The MCP server around the simulated account: Kite-named tools over streamable HTTP.

Tools (names as Kite's MCP server spells them): ``login``, ``get_profile``,
``get_margins``, ``get_holdings``, ``get_positions``, ``get_orders``,
``get_order_history``, ``get_trades``, ``place_order``, ``modify_order``,
``cancel_order``, ``get_ltp``, ``get_quotes``. Each answers one text content block
holding JSON in Kite Connect's shape, with every money and quantity value a decimal
string (see ``mock_mcp.account``). Bad input is a tool error (``isError``) whose text
says why; the server never crashes on it.

Sessions (``mock_mcp.auth``): with a ``SessionAuth`` every tool but ``login`` needs the
header ``Authorization: token <api_key>:<access_token>`` of a live session, else it is a
tool error starting ``TokenException:``. Without one (no api key configured) the tools
answer anyone and ``login`` says that sessions are off.

``place_order`` records the order (status OPEN); every tool call first lets the account
fill the orders placed here against the latest marks (``Account.match``: the broker's own
executions). Fills of orders the gateway routed elsewhere reach the account from
``ex:events`` (the execution gateway's reports). ``place_order`` also takes an optional
``client_order_id`` (not a Kite argument): the caller's id, idempotent, shown on orders
and trades, so the gateway's MCP venue can find its orders again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from mock_mcp.account import Account, InvalidOrder
from mock_mcp.auth import AuthError, SessionAuth

__all__ = ["TOOL_NAMES", "McpHttpServer", "build_mcp_server"]

log = logging.getLogger(__name__)

TOOL_NAMES = (
    "login",
    "get_profile",
    "get_margins",
    "get_holdings",
    "get_positions",
    "get_orders",
    "get_order_history",
    "get_trades",
    "place_order",
    "modify_order",
    "cancel_order",
    "get_ltp",
    "get_quotes",
)

Marks = Callable[[], Awaitable[Mapping[str, Decimal]]]


async def _no_marks() -> Mapping[str, Decimal]:
    return {}


def _json(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def build_mcp_server(
    account: Account,
    marks: Marks = _no_marks,
    on_call: Callable[[str], None] | None = None,
    name: str = "aitrader-mock-broker",
    auth: SessionAuth | None = None,
) -> MCPServer:
    """An ``MCPServer`` exposing ``account`` through the Kite-named tools.

    ``marks()`` returns the latest price per symbol (the gateway's marks) and is awaited
    by the tools that value positions; ``on_call(tool)`` is told of every tool call;
    ``auth`` (optional) requires a session token on every tool but ``login``.
    """
    if auth is not None:
        # At DEBUG the SDK prints whole JSON-RPC messages: login arguments and the tokens it returns.
        sdk = logging.getLogger("mcp")
        if sdk.level < logging.INFO:
            sdk.setLevel(logging.INFO)
    srv: MCPServer = MCPServer(
        name,
        instructions="Simulated broker account (Kite Connect shapes; decimals as strings).",
        warn_on_duplicate_tools=True,
    )

    def seen(tool: str, ctx: Context | None = None) -> None:
        if on_call is not None:
            on_call(tool)
        if auth is not None and tool != "login":
            try:
                auth.check(ctx.headers if ctx is not None else None)
            except AuthError as e:
                if on_call is not None:
                    on_call("auth_refused")
                raise ToolError(str(e)) from None

    async def current() -> Mapping[str, Decimal]:
        """The marks, after filling what they fill (so every answer is up to date)."""
        m = await marks()
        account.match(m)
        return m

    def tool(fn: Callable[..., Any]) -> None:
        # Unstructured: one text block of JSON, the way Kite's MCP server answers.
        srv.add_tool(fn, name=fn.__name__, description=(fn.__doc__ or "").strip(), structured_output=False)

    async def get_profile(ctx: Context) -> str:
        """The account holder's profile: user_id, user_name, email, broker, exchanges, products."""
        seen("get_profile", ctx)
        return _json(account.profile())

    async def get_margins(ctx: Context) -> str:
        """Funds: {"equity": {"net", "available": {"cash", "live_balance", ...}, "utilised": {...}}}."""
        seen("get_margins", ctx)
        return _json(account.margins(await current()))

    async def get_holdings(ctx: Context) -> str:
        """Delivery (CNC) holdings with quantity, average_price, last_price and pnl."""
        seen("get_holdings", ctx)
        return _json(account.holdings_view(await current()))

    async def get_positions(ctx: Context) -> str:
        """Positions {"net": [...], "day": [...]}: tradingsymbol, quantity, average_price, last_price, pnl,
        realised, unrealised."""
        seen("get_positions", ctx)
        return _json(account.positions_view(await current()))

    async def get_orders(ctx: Context) -> str:
        """Orders of the session (placed here or reported by the execution gateway), oldest first."""
        seen("get_orders", ctx)
        await current()
        return _json(account.orders_view())

    async def get_trades(ctx: Context) -> str:
        """Fills of the session, oldest first."""
        seen("get_trades", ctx)
        await current()
        return _json(account.trades_view())

    async def place_order(
        tradingsymbol: str,
        transaction_type: str,
        quantity: Decimal,
        exchange: str = "SIM",
        product: str = "MIS",
        order_type: str = "MARKET",
        price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        validity: str = "DAY",
        variety: str = "regular",
        tag: str = "",
        client_order_id: str = "",
        ctx: Context | None = None,
    ) -> str:
        """Record an order (status OPEN, or REJECTED with a reason for lack of funds) and return {"order_id"}.
        It fills against the latest marks (MARKET at once; LIMIT / SL when the mark reaches its price).
        client_order_id (optional): your id for it; placing the same id again returns the first order."""
        seen("place_order", ctx)
        m = await current()
        try:
            o = account.place_order(
                tradingsymbol=tradingsymbol,
                transaction_type=transaction_type,
                quantity=quantity,
                exchange=exchange,
                product=product,
                order_type=order_type,
                price=price,
                trigger_price=trigger_price,
                validity=validity,
                variety=variety,
                tag=tag,
                marks=m,
                client_order_id=client_order_id,
            )
        except InvalidOrder as e:
            raise ToolError(f"invalid order: {e}") from e
        account.match(m)
        return _json({"order_id": o.order_id, "status": o.status})

    async def cancel_order(order_id: str, variety: str = "regular", ctx: Context | None = None) -> str:
        """Cancel an OPEN order and return {"order_id"}."""
        seen("cancel_order", ctx)
        await current()
        try:
            o = account.cancel_order(order_id, variety)
        except InvalidOrder as e:
            raise ToolError(f"cannot cancel: {e}") from e
        return _json({"order_id": o.order_id, "status": o.status})

    async def login(api_key: str, api_secret: str = "", request_token: str = "", checksum: str = "") -> str:
        """Start a session: {"access_token", "expires_in" (seconds), "expires_at", "user_id", ...}.
        Give api_key with api_secret, or with request_token and checksum = sha256(api_key + request_token +
        api_secret) hex. Then send 'Authorization: token <api_key>:<access_token>' on every request."""
        seen("login")
        if auth is None:
            raise ToolError("sessions are off on this server: every tool answers without login "
                            "(set AITRADER_MCP_API_KEY and AITRADER_MCP_API_SECRET to require one)")
        try:
            return _json(auth.login(api_key, api_secret, request_token, checksum))
        except AuthError as e:
            raise ToolError(str(e)) from None

    async def get_order_history(order_id: str, ctx: Context | None = None) -> str:
        """Every state of one order, oldest first (each entry shaped like a get_orders row)."""
        seen("get_order_history", ctx)
        await current()
        try:
            return _json(account.order_history(order_id))
        except InvalidOrder as e:
            raise ToolError(str(e)) from e

    async def modify_order(
        order_id: str,
        variety: str = "regular",
        quantity: Decimal | None = None,
        price: Decimal | None = None,
        order_type: str | None = None,
        trigger_price: Decimal | None = None,
        validity: str | None = None,
        ctx: Context | None = None,
    ) -> str:
        """Change an OPEN order placed through place_order (quantity, price, order_type, trigger_price,
        validity; omitted ones keep their value) and return {"order_id", "status"}."""
        seen("modify_order", ctx)
        m = await current()
        try:
            o = account.modify_order(
                order_id, variety, quantity=quantity, price=price, order_type=order_type,
                trigger_price=trigger_price, validity=validity, marks=m,
            )
        except InvalidOrder as e:
            raise ToolError(f"cannot modify: {e}") from e
        account.match(m)
        return _json({"order_id": o.order_id, "status": o.status})

    async def get_ltp(instruments: list[str], ctx: Context | None = None) -> str:
        """Last price per instrument ('EXCHANGE:SYMBOL' or 'SYMBOL'): {key: {"instrument_token", "last_price"}}.
        Instruments with no price yet are left out."""
        seen("get_ltp", ctx)
        try:
            return _json(account.ltp_view(instruments, await current()))
        except InvalidOrder as e:
            raise ToolError(str(e)) from e

    async def get_quotes(instruments: list[str], ctx: Context | None = None) -> str:
        """Quotes per instrument: last_price, ohlc of the session's marks, volume traded in this account,
        net_change; no depth. Instruments with no price yet are left out."""
        seen("get_quotes", ctx)
        try:
            return _json(account.quotes_view(instruments, await current()))
        except InvalidOrder as e:
            raise ToolError(str(e)) from e

    for fn in (
        login,
        get_profile,
        get_margins,
        get_holdings,
        get_positions,
        get_orders,
        get_order_history,
        get_trades,
        place_order,
        modify_order,
        cancel_order,
        get_ltp,
        get_quotes,
    ):
        tool(fn)
    return srv


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the hosting service owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


class McpHttpServer:
    """Serves an ``MCPServer`` over streamable HTTP with uvicorn, in the caller's event loop.

    ``bind()`` opens the listening socket first (port 0 picks a free one; ``port`` then
    tells which), so a port in use fails with a clear ``OSError`` before serving starts.
    """

    def __init__(
        self,
        mcp: MCPServer,
        host: str = "127.0.0.1",
        port: int = 8765,
        path: str = "/mcp",
        shutdown_timeout_s: float = 3.0,
    ) -> None:
        self.mcp = mcp
        self.host = host
        self.port = port
        self.path = path
        self.shutdown_timeout_s = shutdown_timeout_s
        self._sock: socket.socket | None = None
        self._server: _QuietServer | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    @property
    def started(self) -> bool:
        return bool(self._server and self._server.started)

    def bind(self) -> None:
        if self._sock is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise OSError(
                e.errno, f"MCP server cannot listen on {self.host}:{self.port}: {e.strerror}"
            ) from e
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sock = sock

    async def serve(self) -> None:
        """Serve until ``stop()``; a cancelled caller still gets a graceful shutdown (bounded)."""
        self.bind()
        # A fresh app per run: the SDK's session manager can run only once.
        app = self.mcp.streamable_http_app(streamable_http_path=self.path, host=self.host)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=max(1, int(self.shutdown_timeout_s)),
        )
        self._server = _QuietServer(config)
        task = asyncio.ensure_future(self._server.serve(sockets=[self._sock]))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self._server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, self.shutdown_timeout_s + 1)
            raise
        finally:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
