"""strategy_engine: signals from ``pe:signals`` → sized ``OrderIntent``s on ``se:intents``.

Sizing is fixed-fractional with cash, position and long-only caps, from an account
context read over MCP (``AITRADER_SE_MCP_URL``, default the mock broker at
http://127.0.0.1:8765/mcp), cached and refreshed in the background and on fills.
Start it with ``python -m strategy_engine``.
"""
