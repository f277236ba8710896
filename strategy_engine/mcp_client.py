"""The strategy engine's MCP client: reads the broker account over streamable HTTP.

Errors are translated at this boundary into two exceptions named for the caller's next
step: ``BrokerUnavailable`` (cannot reach the server, timed out, connection dropped —
retry later, the context goes stale meanwhile) and ``BrokerError`` (the server answered
with a tool error, a protocol error or an unexpected shape — retrying at once will not
help; check configuration). Both subclass ``BrokerClientError``. ``BrokerAuthError`` (a
``BrokerError``) is a refused login or session.

Each call opens a short MCP session (the SDK negotiates the protocol version, falling
back to the initialize handshake for older servers), makes its tool calls and closes it:
the engine refreshes every few seconds, so a dropped connection never poisons later calls.

Authentication, chosen by configuration (``docs/strategies.md``, "Broker account over MCP"):

- none: no header (``mock_mcp`` without an api key);
- a fixed secret: ``auth_header: auth_secret`` on every request (a token obtained
  elsewhere, e.g. ``Bearer <token>``);
- a login (``LoginConfig``): the client calls the ``login`` tool with the api key and
  secret, gets an access token and its lifetime (``expires_in`` seconds, else
  ``expires_at``; a day when the answer has neither) and sends
  ``Authorization: token <api_key>:<access_token>`` (Kite's header; the format is
  configurable). It logs in again by itself when the token is within
  ``refresh_margin_s`` (at most a tenth of its lifetime) of its expiry, and once, retrying the call, when a tool answers
  ``TokenException`` (the server ended the session early, e.g. it restarted). With a
  ``BrokerTokenStore`` the token is saved encrypted after each login and reused across
  restarts until it expires; a stored token that cannot be decrypted (wrong key, altered
  row) is logged as an ERROR and replaced by a fresh login; a database that fails only
  costs a login. Tokens and secrets are never logged nor shown in ``repr``.

The server must expose Kite-named tools (``get_margins``, ``get_positions``,
``get_holdings``) answering Kite Connect shaped JSON (as text or structured content;
numbers or decimal strings both parse exactly). A server that needs an interactive
browser login per session cannot be driven by configuration alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, CallToolResult, Implementation

from strategy_engine.account import AccountSnapshot, SnapshotError

if TYPE_CHECKING:
    from common.broker_tokens import BrokerTokenStore

__all__ = [
    "BrokerAuthError", "BrokerClientError", "BrokerError", "BrokerUnavailable", "LoginConfig", "McpBrokerClient",
    "client_from_settings", "login_config",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_ERROR = "TokenException"  # Kite's error type for a missing, invalid or expired session
DEFAULT_TOKEN_LIFETIME_S = 86_400.0  # when the login answer states no expiry


class BrokerClientError(Exception):
    """Base of the MCP client's errors."""


class BrokerUnavailable(BrokerClientError):
    """The broker's MCP server cannot be reached or did not answer in time; retry later."""


class BrokerError(BrokerClientError):
    """The broker answered with an error or an unexpected shape; retrying at once will not help."""


class BrokerAuthError(BrokerError):
    """The broker refused the login or the session (``TokenException``); check the credentials."""


@dataclass(frozen=True)
class LoginConfig:
    """How to log in to a broker's MCP server and present its session token."""

    api_key: str
    api_secret: str = field(repr=False)
    broker: str = "mock"  # names the stored token's row (broker_tokens.broker)
    tool: str = "login"
    header: str = "Authorization"
    header_format: str = "token {api_key}:{access_token}"
    refresh_margin_s: float = 30.0  # log in again this long before expiry (at most a tenth of the lifetime)

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_secret:
            raise ValueError("a login needs both api_key and api_secret")
        if "{access_token}" not in self.header_format:
            raise ValueError("header_format must contain {access_token}")


def login_config(settings: Any) -> LoginConfig | None:
    """The ``LoginConfig`` of a settings object with ``mcp_api_key`` & co.; None when no api key is set."""
    if not settings.mcp_api_key:
        return None
    return LoginConfig(
        settings.mcp_api_key, settings.mcp_api_secret, broker=settings.mcp_broker, tool=settings.mcp_login_tool,
        header=settings.mcp_auth_header, header_format=settings.mcp_auth_format,
    )


def client_from_settings(settings: Any, common: Any, client_name: str) -> McpBrokerClient:
    """The client a service's settings describe; with a login, its tokens go to the encrypted store
    (``ConfigError`` naming AITRADER_BROKER_TOKEN_KEY when no key is set)."""
    login = login_config(settings)
    store = None
    if login is not None:
        from common.broker_tokens import BrokerTokenStore

        store = BrokerTokenStore.from_settings(common)
    return McpBrokerClient(
        settings.mcp_url, auth_header=settings.mcp_auth_header, auth_secret=settings.mcp_auth_secret,
        timeout_s=settings.mcp_timeout_s, client_name=client_name, login=login, token_store=store,
    )


def _leaf(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        # Prefer our own errors, then the first cause of the group.
        ours = [x for x in e.exceptions if isinstance(x, BrokerClientError)]
        e = ours[0] if ours else e.exceptions[0]
    return e


def _payload(tool: str, result: CallToolResult) -> Any:
    text = "".join(getattr(c, "text", "") for c in result.content or [])
    if result.is_error:
        cls = BrokerAuthError if TOKEN_ERROR in text[:200] else BrokerError
        raise cls(f"{tool}: {text[:500] or 'tool error'}")
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


def _lifetime(ans: dict[str, Any], now: float) -> float:
    """Seconds the login answer says its token lives (``expires_in``, else ``expires_at``), else a day."""
    try:
        if ans.get("expires_in") not in (None, ""):
            return max(float(ans["expires_in"]), 0.0)
        exp = ans.get("expires_at")
        if isinstance(exp, (int, float)):
            return max(float(exp) - now, 0.0)
        if isinstance(exp, str) and exp:
            dt = datetime.fromisoformat(exp.replace(" ", "T"))
            return max((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() - now, 0.0)
    except (TypeError, ValueError):
        pass
    return DEFAULT_TOKEN_LIFETIME_S


def _quiet_sdk_logs() -> None:
    """Cap the MCP SDK's loggers at INFO: at DEBUG they print whole JSON-RPC messages (login arguments)."""
    sdk = logging.getLogger("mcp")
    if sdk.level < logging.INFO:
        sdk.setLevel(logging.INFO)


def _utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
        login: LoginConfig | None = None,
        token_store: BrokerTokenStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if login is not None and auth_secret:
            raise ValueError("give either a fixed auth_secret or a login, not both")
        self.url = url
        self.timeout_s = timeout_s
        self._headers = {auth_header: auth_secret} if auth_secret else {}
        self._info = Implementation(name=client_name, version="1")
        self.login_config = login
        self.token_store = token_store
        self.clock = clock
        self._token = ""
        self._expires = 0.0  # epoch seconds
        self._margin = 0.0  # re-login this long before _expires
        self._store_checked = False
        self.logins = 0  # successful logins by this client
        if login is not None:
            _quiet_sdk_logs()

    def __repr__(self) -> str:  # never shows the secret or the token
        return f"McpBrokerClient({self.url!r})"

    # -- the session token -------------------------------------------------------------------
    @property
    def token_expires_at(self) -> float:
        """Expiry (epoch seconds) of the session token held now; 0 when none."""
        return self._expires if self._token else 0.0

    def _fresh(self) -> bool:
        return bool(self._token) and self.clock() < self._expires - self._margin

    def _hold(self, token: str, expires: float, now: float) -> None:
        assert self.login_config is not None
        self._token, self._expires = token, expires
        # A short-lived token (tests, some brokers) must not count as expired from the start.
        self._margin = min(self.login_config.refresh_margin_s, max(expires - now, 0.0) / 10)

    def _load_stored(self) -> None:
        lc = self.login_config
        assert lc is not None and self.token_store is not None
        from common.broker_tokens import TokenDecryptError

        try:
            st = self.token_store.load(lc.broker, lc.api_key)
        except TokenDecryptError as e:
            # Loud, but not fatal: a fresh login overwrites the row with a token under the current key.
            log.error("stored broker session token unusable, logging in afresh: %s", e)
            return
        except Exception as e:  # noqa: BLE001 - the store is a cache: a database that fails means log in
            log.warning("broker token store unavailable (%s); logging in", type(e).__name__)
            return
        now = self.clock()
        if st is not None and st.expires_at / 1e9 > now + min(lc.refresh_margin_s, 1.0):
            self._hold(st.token, st.expires_at / 1e9, now)
            log.info("broker session for %s/%s reused from the token store (expires %s)", lc.broker, lc.api_key,
                     _utc(self._expires))

    async def _login(self) -> None:
        lc = self.login_config
        assert lc is not None
        self._token, self._expires = "", 0.0

        async def go(client: Client) -> Any:
            args = {"api_key": lc.api_key, "api_secret": lc.api_secret}
            return _payload(lc.tool, await client.call_tool(lc.tool, args))

        try:
            ans = await self._run_once(go, {})
        except BrokerAuthError as e:
            raise BrokerAuthError(f"login refused: {e}") from None
        token = ans.get("access_token") if isinstance(ans, dict) else None
        if not isinstance(token, str) or not token:
            raise BrokerError(f"{lc.tool}: the answer has no access_token")
        now = self.clock()
        self._hold(token, now + _lifetime(ans, now), now)
        self.logins += 1
        log.info("logged in to %s as %s (session expires %s)", self.url, ans.get("user_id") or lc.api_key,
                 _utc(self._expires))
        if self.token_store is not None:
            try:
                self.token_store.save(lc.broker, lc.api_key, token, int(self._expires * 1e9))
            except Exception as e:  # noqa: BLE001 - the session works without it; the next start logs in
                log.warning("broker token not stored (%s: %s)", type(e).__name__, str(e)[:200])

    async def _auth_headers(self) -> dict[str, str]:
        lc = self.login_config
        if lc is None:
            return self._headers
        if not self._fresh() and self.token_store is not None and not self._store_checked:
            self._store_checked = True  # only at start: later the token in memory is the newest
            self._load_stored()
        if not self._fresh():
            await self._login()
        return {lc.header: lc.header_format.format(api_key=lc.api_key, access_token=self._token)}

    # -- calls -------------------------------------------------------------------------------
    @asynccontextmanager
    async def _session(self, headers: dict[str, str]) -> AsyncIterator[Client]:
        timeout = httpx2.Timeout(self.timeout_s)
        async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
            transport = streamable_http_client(self.url, http_client=http)
            async with Client(
                transport, cache=None, read_timeout_seconds=self.timeout_s, client_info=self._info
            ) as client:
                yield client

    async def _run(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        headers = await self._auth_headers()
        try:
            return await self._run_once(fn, headers)
        except BrokerAuthError:
            if self.login_config is None:
                raise
        # The server ended the session before its expiry (e.g. it restarted): log in once more.
        log.info("broker session refused by %s; logging in again", self.url)
        await self._login()
        return await self._run_once(fn, await self._auth_headers())

    async def _run_once(self, fn: Callable[[Client], Awaitable[T]], headers: dict[str, str]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._session(headers) as client:
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
        """Call several tools in one session, in order; return their payloads.

        A ``TokenException`` part-way logs in again and repeats the whole batch: batch only
        reads, or writes that are idempotent (``place_order`` with ``client_order_id``).
        """

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
