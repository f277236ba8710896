"""The MCP client against the real mock broker server: snapshots, tool errors, unreachable servers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from decimal import Decimal

import pytest
from mcp.server.mcpserver import Context, MCPServer

from common.broker_tokens import BrokerTokenStore, TokenCipher
from common.db import make_engine, migrate
from common.messages import Side
from mock_mcp.account import Account, AccountSeed
from mock_mcp.auth import SessionAuth
from mock_mcp.server import McpHttpServer, build_mcp_server
from strategy_engine.account import AccountContext
from strategy_engine.mcp_client import (
    BrokerAuthError,
    BrokerError,
    BrokerUnavailable,
    LoginConfig,
    McpBrokerClient,
)
from tests.unit.common.test_broker_tokens import scan_database
from tests.unit.mock_mcp.stubs import fill


@pytest.fixture
async def broker():
    seed = AccountSeed(holdings=(("HLD", "SIM", Decimal(5), Decimal(20), ""),))
    account = Account(Decimal(10000), seed)

    async def marks():
        return {"AAA": Decimal(110)}

    http = McpHttpServer(build_mcp_server(account, marks), port=0)
    task = asyncio.create_task(http.serve())
    while not http.started:
        await asyncio.sleep(0.02)
    yield account, http
    http.stop()
    await asyncio.wait_for(task, 10)


async def test_context_refresh_over_mcp_reflects_the_account(broker):
    account, http = broker
    account.apply_report(fill(symbol="AAA", side=Side.BUY, qty="10", px="100", fee="1"))
    client = McpBrokerClient(http.url, timeout_s=5)
    snap = await client.snapshot()
    assert snap.cash == Decimal(8999) and snap.available == Decimal(8999)
    assert snap.positions == {"AAA": Decimal(10), "HLD": Decimal(5)}
    assert snap.prices["AAA"] == Decimal(110)
    assert snap.equity == Decimal(8999) + 10 * 110 + 5 * 20
    ctx = AccountContext()
    ctx.apply_snapshot(snap, requested_ns=0)
    assert ctx.position("AAA") == 10 and not ctx.is_stale()


async def test_tool_error_is_a_broker_error(broker):
    _, http = broker
    client = McpBrokerClient(http.url)
    with pytest.raises(BrokerError, match="transaction_type"):
        await client.call("place_order", {"tradingsymbol": "AAA", "transaction_type": "HOLD", "quantity": 1})
    with pytest.raises(BrokerError, match="Unknown tool"):
        await client.call("no_such_tool")
    assert (await client.call("get_profile"))["user_id"] == "SIM001"


async def test_unreachable_or_silent_server_is_broker_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrokerUnavailable, match="127.0.0.1"):
        await McpBrokerClient(f"http://127.0.0.1:{port}/mcp", timeout_s=2).snapshot()
    # A server that accepts but never answers: the timeout, not a hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
        with pytest.raises(BrokerUnavailable, match="no answer within"):
            await McpBrokerClient(url, timeout_s=0.5).snapshot()


def test_the_auth_secret_never_shows_in_repr():
    c = McpBrokerClient("https://broker.example/mcp", auth_secret="Bearer s3cr3t")
    assert "s3cr3t" not in repr(c) and "s3cr3t" not in repr(vars(c).get("url"))


async def test_the_auth_header_reaches_the_server():
    srv = MCPServer("echo")

    @srv.tool(name="whoami")
    async def whoami(ctx: Context) -> str:
        return json.dumps({"auth": (ctx.headers or {}).get("x-broker-token", "")})

    http = McpHttpServer(srv, port=0)
    task = asyncio.create_task(http.serve())
    try:
        while not http.started:
            await asyncio.sleep(0.02)
        client = McpBrokerClient(http.url, auth_header="X-Broker-Token", auth_secret="tok-123")
        assert await client.call("whoami") == {"auth": "tok-123"}
    finally:
        http.stop()
        await asyncio.wait_for(task, 10)


# -- sessions: login, expiry, re-login, the encrypted token store ------------------------------------------

KEY, SECRET = "kite-key-1", "kite-secret-XYZ-123"


class AuthBroker:
    """The real mock broker over HTTP with sessions on; ``restart()`` ends every session."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.account = Account(Decimal(10000))
        self.auth = SessionAuth(KEY, SECRET, ttl_s)
        self.tokens: list[str] = []
        self.http: McpHttpServer | None = None
        self.task: asyncio.Task | None = None

    async def start(self, port: int = 0) -> None:
        orig = self.auth.login

        def login(*a, **kw):
            ans = orig(*a, **kw)
            self.tokens.append(ans["access_token"])
            return ans

        self.auth.login = login
        self.http = McpHttpServer(build_mcp_server(self.account, auth=self.auth), port=port)
        self.task = asyncio.create_task(self.http.serve())
        while not self.http.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.http.stop()
        await asyncio.wait_for(self.task, 10)

    async def restart(self) -> None:
        port = self.http.port
        await self.stop()
        self.auth = SessionAuth(KEY, SECRET, self.ttl_s)
        await self.start(port)


@pytest.fixture
async def auth_broker():
    b = AuthBroker(ttl_s=3600)
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
def token_store(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    yield BrokerTokenStore(engine, TokenCipher(os.urandom(32)))
    engine.dispose()


def _client(url: str, store=None, margin: float = 0.0, secret: str = SECRET) -> McpBrokerClient:
    return McpBrokerClient(url, timeout_s=5, login=LoginConfig(KEY, secret, broker="kite", refresh_margin_s=margin),
                           token_store=store)


async def test_the_client_logs_in_and_sends_kites_authorization_header(auth_broker):
    c = _client(auth_broker.http.url)
    snap = await c.snapshot()
    assert snap.cash == Decimal(10000) and c.logins == 1 == auth_broker.auth.logins
    assert (await c.call("get_profile"))["user_id"] == "SIM001"
    assert auth_broker.auth.logins == 1  # the token is reused while it lives
    assert SECRET not in repr(c) and auth_broker.tokens[0] not in repr(c) and SECRET not in repr(c.login_config)
    # Without a login the same server refuses: a BrokerAuthError, which is a BrokerError.
    with pytest.raises(BrokerAuthError, match="TokenException: missing access token"):
        await McpBrokerClient(auth_broker.http.url).snapshot()


async def test_an_expired_token_is_replaced_by_a_new_login():
    b = AuthBroker(ttl_s=1.0)
    await b.start()
    try:
        c = _client(b.http.url, margin=0.2)
        await c.call("get_margins")
        first_expiry = c.token_expires_at
        assert 0.5 < first_expiry - time.time() <= 1.0
        await asyncio.sleep(1.1)  # the token is dead at the server too
        await c.call("get_margins")
        assert c.logins == 2 == b.auth.logins and c.token_expires_at > first_expiry
        # The default 30 s margin shrinks to a tenth of a short lifetime: no login per call.
        d = McpBrokerClient(b.http.url, login=LoginConfig(KEY, SECRET))
        await d.call("get_margins")
        await d.call("get_margins")
        assert d.logins == 1
        # A token the server ended early (its restart) is refused; the client logs in once and retries.
        c2 = _client(b.http.url, margin=0.0)
        await c2.call("get_margins")
        await b.restart()
        assert (await c2.call("get_profile"))["user_id"] == "SIM001"
        assert b.auth.logins == 1 and c2.logins == 2
    finally:
        await b.stop()


async def test_a_refused_login_is_a_broker_error_and_a_dead_server_is_unavailable(auth_broker, broker):
    with pytest.raises(BrokerAuthError, match="login refused: .*invalid api_secret") as e:
        await _client(auth_broker.http.url, secret="wrong").snapshot()
    assert isinstance(e.value, BrokerError)
    _, open_http = broker  # a server with sessions off says so
    with pytest.raises(BrokerError, match="sessions are off"):
        await _client(open_http.url).snapshot()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrokerUnavailable):
        await _client(f"http://127.0.0.1:{port}/mcp").snapshot()


async def test_the_stored_token_survives_a_restart_of_the_client_until_it_expires(auth_broker, token_store, caplog):
    caplog.set_level(logging.DEBUG)
    first = _client(auth_broker.http.url, token_store)
    await first.snapshot()
    token = auth_broker.tokens[0]
    stored = token_store.load("kite", KEY)
    assert stored.token == token and abs(stored.expires_at / 1e9 - first.token_expires_at) < 1e-3
    # A new process (a new client) reuses it: no second login.
    second = _client(auth_broker.http.url, token_store)
    await second.snapshot()
    assert auth_broker.auth.logins == 1 and second.logins == 0
    assert "reused from the token store" in caplog.text
    # An expired stored token is not used: a login, and the row rotates.
    token_store.save("kite", KEY, token, expires_at=int((time.time() - 1) * 1e9))
    third = _client(auth_broker.http.url, token_store)
    await third.snapshot()
    assert third.logins == 1 and token_store.load("kite", KEY).token == auth_broker.tokens[1] != token
    # Neither the tokens nor the secret reach the logs or the database in plaintext.
    for secret in (*auth_broker.tokens, SECRET):
        assert secret not in caplog.text
    assert scan_database(token_store.engine, [*auth_broker.tokens, SECRET]) == []


async def test_a_stored_token_under_another_key_is_reported_and_replaced(auth_broker, token_store, caplog):
    await _client(auth_broker.http.url, token_store).snapshot()
    other_key = BrokerTokenStore(token_store.engine, TokenCipher(os.urandom(32)))
    c = _client(auth_broker.http.url, other_key)
    with caplog.at_level(logging.ERROR):
        await c.snapshot()
    assert "stored with another key" in caplog.text and "wrong key" in caplog.text
    assert c.logins == 1 and other_key.load("kite", KEY).token == auth_broker.tokens[-1]
