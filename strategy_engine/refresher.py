"""The account refresh in its own process: the MCP round trips' Python never holds the engine's GIL.

A refresh (an MCP session, three tool calls, JSON and validation) costs tens of ms of CPU. On a
thread of the engine's process it holds the GIL in slices while signals wait, which put the
refreshes straight into the signal→intent tail (docs/benchmarks.md). ``ProcessRefresher`` keeps
one worker process (``spawn``: no inherited event loop, sockets or locks) holding the MCP client,
built from the same settings, so a login and its token store work as in the engine; each
``snapshot()`` runs there and only the small ``AccountSnapshot`` comes back (pickled). A worker
that dies is replaced on the next refresh (that refresh fails as ``BrokerUnavailable``).

The worker dies with the engine. An engine that is SIGKILLed (or crashes) cannot shut its pool
down, and a ``spawn`` worker holds both ends of the pool's queues, so it would never read an end of
file and would outlive the engine for good (one per crash, ~80 MB each): a thread in the worker
watches the parent's pid and exits the worker once the engine is gone.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from strategy_engine.account import AccountSnapshot
from strategy_engine.mcp_client import BrokerUnavailable

__all__ = ["ProcessRefresher"]

log = logging.getLogger(__name__)

_client: Any = None  # the worker process's MCP client


PARENT_POLL_S = 0.5


def _follow_parent(parent: int) -> None:
    """Exit this worker as soon as ``parent`` (the engine) is no longer its parent (at once if it died
    while the worker was starting)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)  # no clean-up to run: the worker holds nothing but an MCP client


def _init(settings: Any, common: Any, log_level: str, parent: int) -> None:
    global _client
    threading.Thread(target=_follow_parent, args=(parent,), name="follow-engine", daemon=True).start()
    from common.service import setup_logging
    from strategy_engine.mcp_client import client_from_settings

    setup_logging(log_level, common.log_json)
    _client = client_from_settings(settings, common, "aitrader-strategy-engine")


def _fetch() -> AccountSnapshot:
    return asyncio.run(_client.snapshot())


class ProcessRefresher:
    """``await snapshot()`` in a worker process; errors are the client's own (pickled back)."""

    def __init__(self, settings: Any, common: Any) -> None:
        self._args = (settings, common, common.log_level, os.getpid())
        self._pool: ProcessPoolExecutor | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init, initargs=self._args)
        return self._pool

    async def snapshot(self) -> AccountSnapshot:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._ensure(), _fetch)
        except BrokenProcessPool as e:
            self.close()
            raise BrokerUnavailable(f"the refresh process died ({e}); a new one starts on the next refresh") from e

    def worker_pids(self) -> list[int]:
        """The pool's live worker processes (none before the first refresh)."""
        procs = getattr(self._pool, "_processes", None) or {}
        return [p for p in procs if p]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
