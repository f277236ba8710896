"""The mock broker service: the simulated account, kept current from ``ex:events``, served over MCP.

It consumes ``ExecutionReport``s from ``ex:events`` in group ``mock_mcp``
(``streams.GROUP_ACCOUNT``); a report with ``last_qty > 0`` is a fill and moves cash,
positions and trades, once per ``exec_id``. The MCP HTTP server runs in the same event
loop as one of the service's tasks, so health, heartbeats and SIGTERM (stop serving,
finish the batch, exit 0) come from ``common.service.Service``.

State lives only in memory. **A restart rebuilds the account by replaying ``ex:events``
from its first entry**: ``setup()`` reads the whole stream with ``XRANGE`` (pages of
``replay_page``) and applies every valid report before the consumer joins its group.
Then the group delivers whatever it has not delivered yet (and this consumer's pending
entries); those overlap the replay and are dropped as duplicates by ``exec_id``.
Why XRANGE rather than destroying and recreating the group at 0: the stream, not the
group, is the record; XRANGE leaves the group's pending entries, delivery counts and
dead-letter accounting intact (nothing is lost if another consumer shares the group), and
idempotency by ``exec_id`` already makes the overlap harmless. What the stream no longer
holds (trimmed by ``MAXLEN``) cannot be replayed: size ``stream_maxlen`` for a session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

import msgspec

from common import streams
from common.bus import DATA_FIELD, Entry, Outputs
from common.config import CommonSettings, load
from common.instruments import Instruments
from common.messages import ExecutionReport, check, decode_as
from common.service import Service
from mock_mcp.account import Account, AccountSeed, ReportResult, generate_seed, load_seed
from mock_mcp.auth import SessionAuth
from mock_mcp.config import McpSettings
from mock_mcp.server import McpHttpServer, build_mcp_server

__all__ = ["MockMcpService", "build", "build_account"]

log = logging.getLogger(__name__)


def build_account(
    common: CommonSettings,
    settings: McpSettings,
    seed: AccountSeed | None = None,
    instruments: Instruments | None = None,
    **kw: object,
) -> Account:
    """The account the mock broker serves, from the settings (seed file, generated seed); also the
    in-process account of a backtest (backend/backtest), so both start from the same figures."""
    if seed is None:
        seed = load_seed(settings.account_file) if settings.account_file.exists() else AccountSeed()
        if settings.seed is not None:
            seed = generate_seed(settings.seed, seed)
    return Account(
        Decimal(common.initial_cash),
        seed,
        instruments if instruments is not None else Instruments.load(),
        max_orders=settings.max_orders,
        max_trades=settings.max_trades,
        fee_bps=settings.fee_bps,
        **kw,
    )


class MockMcpService(Service):
    """Simulated broker account behind a real MCP server (streamable HTTP)."""

    name = streams.GROUP_ACCOUNT  # "mock_mcp": also the consumer group on ex:events

    def __init__(
        self,
        common: CommonSettings,
        settings: McpSettings | None = None,
        seed: AccountSeed | None = None,
        instruments: Instruments | None = None,
    ) -> None:
        super().__init__(common)
        self.settings = settings or load(McpSettings)
        self.serve_metrics_from(self.settings)
        self.account = build_account(common, self.settings, seed, instruments)
        seed = self.account.seed
        self.tool_calls: dict[str, int] = {}
        s = self.settings
        self.auth = (
            SessionAuth(s.api_key, s.api_secret, s.token_ttl_s, user_id=seed.user_id) if s.api_key else None
        )
        self.http = McpHttpServer(
            build_mcp_server(self.account, self.marks, self._on_tool_call, auth=self.auth),
            host=self.settings.host,
            port=self.settings.port,
            path=self.settings.path,
            shutdown_timeout_s=self.settings.shutdown_timeout_s,
        )

    # -- MCP side --------------------------------------------------------------------------
    def _on_tool_call(self, tool: str) -> None:
        self.tool_calls[tool] = self.tool_calls.get(tool, 0) + 1
        self.count(f"tool_calls.{tool}")

    async def marks(self) -> Mapping[str, Decimal]:
        """The gateway's marks (``ex:marks``: symbol → price string); {} when Redis does not answer."""
        if self.redis is None:
            return {}
        try:
            raw = await asyncio.wait_for(self.redis.hgetall(streams.MARKS), self.settings.marks_timeout_s)
        except Exception as e:  # noqa: BLE001 - marks are optional: fill prices stand in
            log.debug("marks unavailable: %s", e)
            return {}
        out: dict[str, Decimal] = {}
        for k, v in raw.items():
            try:
                px = Decimal(v.decode() if isinstance(v, bytes) else str(v))
            except (InvalidOperation, UnicodeDecodeError):
                continue
            if px.is_finite() and px > 0:
                out[k.decode() if isinstance(k, bytes) else str(k)] = px
        return out

    # -- bus side --------------------------------------------------------------------------
    def input_types(self) -> dict[str, type]:
        return {streams.EXEC_EVENTS: ExecutionReport}

    async def setup(self) -> None:
        self.http.bind()  # fail fast (port in use) before joining the group
        n = await self.replay()
        log.info("mock_mcp: account rebuilt from %d ex:events entries; MCP at %s", n, self.http.url)
        if self.auth is None:
            log.warning("mock_mcp: sessions are off (no AITRADER_MCP_API_KEY): every tool answers without login")
        else:
            log.info("mock_mcp: tools need a session token (login; tokens live %gs)", self.settings.token_ttl_s)

    async def replay(self) -> int:
        """Apply every valid report in ``ex:events`` from the start (idempotent); return entries read."""
        assert self.redis is not None
        start, n, page = "-", 0, self.settings.replay_page
        while True:
            items = await self.redis.xrange(streams.EXEC_EVENTS, min=start, max="+", count=page)
            for _eid, fields in items:
                n += 1
                raw = fields.get(DATA_FIELD) if fields else None
                if raw is None:
                    continue
                try:
                    rep = decode_as(raw, ExecutionReport)
                except msgspec.DecodeError:
                    continue  # the group dead-letters it when it first delivers it
                if check(rep) is None:
                    self._apply(rep, None)
            if len(items) < page:
                return n
            last = items[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else last)

    def _apply(self, rep: ExecutionReport, out: Outputs | None) -> str:
        res = self.account.apply_report(rep)
        name = {
            ReportResult.FILL: "fills",
            ReportResult.ORDER: "order_reports",
            ReportResult.DUPLICATE: "reports_duplicate",
            ReportResult.INVALID: "reports_invalid",
            ReportResult.OWN: "reports_own",
        }[res]
        if out is None:
            self.count(f"replayed_{name}")
        else:
            self.count(name)
            out.incr(name)
        return res

    async def handle(self, entry: Entry, out: Outputs) -> None:
        if self._apply(entry.msg, out) == ReportResult.INVALID:
            rep = entry.msg
            out.dead_letter(
                entry, f"invalid fill: last_qty={rep.last_qty} last_px={rep.last_px} fee={rep.fee}"
            )

    async def extra_tasks(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self._serve_http(), name=f"{self.name}.http")]

    async def _serve_http(self) -> None:
        serve = asyncio.ensure_future(self.http.serve())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            done, _ = await asyncio.wait({serve, stop}, return_when=asyncio.FIRST_COMPLETED)
            if serve in done:
                serve.result()
                if not self.stopping.is_set():
                    raise RuntimeError("MCP HTTP server stopped unexpectedly")
        finally:
            stop.cancel()
            self.http.stop()
            # Let uvicorn close connections and run the app's shutdown even when the base class
            # cancels this task right after the main loop ends (bounded by the shutdown timeout).
            cancelled = False
            limit = self.settings.shutdown_timeout_s + 2
            if not serve.done():
                try:
                    await asyncio.wait({serve}, timeout=limit)
                except asyncio.CancelledError:
                    cancelled = True
                    await asyncio.wait({serve}, timeout=limit)
                if not serve.done():
                    serve.cancel()
            if cancelled:
                raise asyncio.CancelledError

    def heartbeat_detail(self) -> str:
        a = self.account
        open_positions = sum(1 for p in a.positions.values() if p.quantity)
        return (
            f"mcp {self.http.url}; cash {a.cash}; open positions {open_positions}; "
            f"reports applied {len(a.applied)}; sessions {'on' if self.auth else 'off'}"
        )


def build(argv: list[str]) -> MockMcpService:
    """Entry-point builder: settings from env/.env (``AITRADER_*``, ``AITRADER_MCP_*``)."""
    return MockMcpService(load(CommonSettings), load(McpSettings))
