"""mock_mcp: a simulated broker account (cash, holdings, positions, orders, trades) behind a real
MCP server over streamable HTTP, kept current by the execution reports on ``ex:events``.

Start it with ``python -m mock_mcp``; it listens on ``AITRADER_MCP_HOST``:``AITRADER_MCP_PORT``
(default 127.0.0.1:8765) at ``AITRADER_MCP_PATH`` (default ``/mcp``).
"""
