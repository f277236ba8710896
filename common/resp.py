"""A lean asyncio Redis connection for the bus's hot path: one write and one read per round trip.

redis-py's asyncio client spends several hundred µs of CPU per read + commit cycle
(command objects, callbacks, response post-processing); on these machines that, not the
stages' own work, bounded a stage's rate (see docs/benchmarks.md, "Where a stage's time
goes"). This connection packs commands with hiredis, parses replies with hiredis and
returns them raw (nested lists of bytes). It does only what the hot path needs: send
commands, get their replies in order. Everything else keeps using redis-py.

Error replies come back as ``redis.exceptions.ResponseError`` (raised by ``call`` and by
``transaction`` for any failed command), ``Refused`` for a refusal that applies nothing and
passes (Redis full, loading, a read-only replica, failing to persist: ``REFUSAL_CODES``); a
lost connection raises ``ConnectionError``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis.exceptions import ResponseError

__all__ = ["REFUSAL_CODES", "RecordingPipe", "Refused", "RespConnection", "is_refusal", "reply_error"]

# Error codes of a command Redis refused as a whole, for now: ``maxmemory`` reached with ``noeviction`` (OOM),
# a script running (BUSY), a data set loading (LOADING), a replica after a failover (READONLY), writes stopped
# because the last save or append-only write failed (MISCONF), a cluster slot moving or down (TRYAGAIN,
# CLUSTERDOWN, MASTERDOWN), too few replicas for min-replicas-to-write (NOREPLICAS). Nothing of the command (of a
# transaction: nothing of it at all) was applied, so sending it again later is safe.
REFUSAL_CODES = frozenset({"OOM", "BUSY", "LOADING", "READONLY", "MISCONF", "TRYAGAIN", "CLUSTERDOWN",
                           "MASTERDOWN", "NOREPLICAS"})


class Refused(ResponseError):
    """Redis refused the command for now and applied none of it (``REFUSAL_CODES``); the text keeps the code."""


def is_refusal(msg: str) -> bool:
    """The text of an error reply is a passing refusal: its code, or for an EXEC refused when it came
    (``EXECABORT Transaction discarded because of: OOM …``) the code of the reason."""
    code, _, rest = msg.partition(" ")
    if code == "EXECABORT":
        code = rest.partition("because of: ")[2].partition(" ")[0]
    return code in REFUSAL_CODES


def reply_error(reply: Any) -> ResponseError:
    """The exception for an error reply: ``Refused`` for a passing refusal, else ``ResponseError``."""
    msg = str(reply)
    return Refused(msg) if is_refusal(msg) else ResponseError(msg)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("connection closed")
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError(f"redis connection lost: {self.lost}"))


class RespConnection:
    """One TCP (or unix socket) connection to Redis, used by one consumer at a time."""

    def __init__(self, protocol: _Protocol) -> None:
        self._p = protocol

    @classmethod
    async def open(cls, kwargs: dict[str, Any]) -> RespConnection:
        """Connect with redis-py's connection kwargs (host/port or path, db, username, password)."""
        loop = asyncio.get_running_loop()
        timeout = kwargs.get("socket_connect_timeout") or 5.0
        if kwargs.get("path"):
            coro = loop.create_unix_connection(_Protocol, kwargs["path"])
        else:
            coro = loop.create_connection(_Protocol, kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379))
        _t, proto = await asyncio.wait_for(coro, timeout)
        conn = cls(proto)
        if kwargs.get("password"):
            user = kwargs.get("username")
            await conn.call(*(("AUTH", user, kwargs["password"]) if user else ("AUTH", kwargs["password"])))
        if kwargs.get("db"):
            await conn.call("SELECT", int(kwargs["db"]))
        return conn

    @property
    def closed(self) -> bool:
        return self._p.lost is not None or self._p.transport is None or self._p.transport.is_closing()

    def _send(self, payload: bytes, n: int) -> list[asyncio.Future]:
        p = self._p
        if self.closed:
            raise ConnectionError(f"redis connection lost: {p.lost}")
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in range(n)]
        p.waiters.extend(futs)
        p.transport.write(payload)  # type: ignore[union-attr]
        return futs

    async def call(self, *args: Any) -> Any:
        """One command, one reply; an error reply raises ``ResponseError``."""
        (fut,) = self._send(hiredis.pack_command(args), 1)
        reply = await fut
        if isinstance(reply, hiredis.ReplyError):
            raise reply_error(reply)
        return reply

    async def pipeline(self, commands: list[tuple]) -> list[Any]:
        """Several commands in one write (no transaction); their replies, or ``ResponseError``."""
        futs = self._send(b"".join(map(hiredis.pack_command, commands)), len(commands))
        replies = [await f for f in futs]
        for r in replies:
            if isinstance(r, hiredis.ReplyError):
                raise reply_error(r)
        return replies

    async def transaction(self, commands: list[tuple]) -> list[Any]:
        """``MULTI``, the commands, ``EXEC`` in one write; returns the commands' replies."""
        futs, _ = self.send_transaction(commands)
        return await self.transaction_replies(futs)

    def send_transaction(
        self, commands: list[tuple], then: tuple | None = None
    ) -> tuple[list[asyncio.Future], asyncio.Future | None]:
        """Write ``MULTI``, the commands, ``EXEC`` and optionally one more command ``then``,
        all in one write. Returns the transaction's futures (for ``transaction_replies``)
        and the future of ``then``'s reply, which may come much later (a blocking read)."""
        parts = [b"*1\r\n$5\r\nMULTI\r\n", *map(hiredis.pack_command, commands), b"*1\r\n$4\r\nEXEC\r\n"]
        if then is not None:
            parts.append(hiredis.pack_command(then))
        futs = self._send(b"".join(parts), len(commands) + 2 + (then is not None))
        if then is None:
            return futs, None
        return futs[:-1], futs[-1]

    @staticmethod
    async def transaction_replies(futs: list[asyncio.Future]) -> list[Any]:
        """The replies of a transaction sent by ``send_transaction``; ``ResponseError`` on any error."""
        replies = [await f for f in futs]
        for r in replies[:-1]:  # MULTI's OK and each QUEUED: an error here aborts the EXEC
            if isinstance(r, hiredis.ReplyError):
                raise reply_error(r)
        results = replies[-1]
        if isinstance(results, hiredis.ReplyError):
            raise reply_error(results)
        if results is None:
            raise ResponseError("transaction aborted")
        for r in results:  # a command that failed inside EXEC: the others were applied, so never ``Refused``
            if isinstance(r, hiredis.ReplyError):
                raise ResponseError(str(r))
        return results

    def close(self) -> None:
        if self._p.transport is not None:
            self._p.transport.close()


class RecordingPipe:
    """Collects the extra commands services queue in a commit (the subset of redis-py's
    pipeline API they use), as raw commands for ``RespConnection.transaction``."""

    __slots__ = ("commands",)

    def __init__(self) -> None:
        self.commands: list[tuple] = []

    def hset(self, name: Any, key: Any = None, value: Any = None, mapping: dict | None = None) -> None:
        args: list[Any] = ["HSET", name]
        if key is not None:
            args += [key, value]
        for k, v in (mapping or {}).items():
            args += [k, v]
        self.commands.append(tuple(args))

    def set(self, name: Any, value: Any, ex: int | None = None) -> None:
        self.commands.append(("SET", name, value) if ex is None else ("SET", name, value, "EX", int(ex)))

    def hincrby(self, name: Any, key: Any, amount: int = 1) -> None:
        self.commands.append(("HINCRBY", name, key, int(amount)))

    def delete(self, *names: Any) -> None:
        self.commands.append(("DEL", *names))

    def xadd(self, name: Any, fields: dict, maxlen: int | None = None, approximate: bool = True) -> None:
        args: list[Any] = ["XADD", name]
        if maxlen is not None:
            args += ["MAXLEN", "~" if approximate else "=", int(maxlen)]
        args.append("*")
        for k, v in fields.items():
            args += [k, v]
        self.commands.append(tuple(args))
