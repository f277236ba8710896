"""Execution gateway / OMS: pre-trade checks, kill switch, order state, venue routing.

Run it with ``python -m execution``. Modules: ``config`` (settings, AITRADER_EX_*),
``risk`` (checks, reason codes), ``kill_switch``, ``order`` (state machine), ``portfolio``,
``oms`` (the batch flow), ``store`` (database I/O), ``venues`` (simulator), ``service``.
"""
