"""mock_mcp: a simulated broker account (cash, holdings, positions, orders, trades) behind a real
MCP server over streamable HTTP, kept current by the execution reports on ``ex:events``.

Start it with ``python -m mock_mcp``; it listens on ``AITRADER_MCP_HOST``:``AITRADER_MCP_PORT``
(default 127.0.0.1:8765) at ``AITRADER_MCP_PATH`` (default ``/mcp``). With
``AITRADER_MCP_API_KEY`` / ``AITRADER_MCP_API_SECRET`` set, every tool but ``login`` needs a
session token (``mock_mcp.auth``); ``AITRADER_MCP_SEED`` makes the account deterministic.
Tools, products, margins and sessions: docs/strategies.md, "Broker account over MCP".
"""
