"""Wire messages: immutable, tagged msgspec Structs encoded as positional MessagePack.

Every message carries a kind tag (first array element) and a schema version ``v``.
Times are int64 nanoseconds since the epoch. Each message carries the stamps of the
tick that caused it (``ts_event`` exchange time, ``ts_ingest`` bus entry time) plus
one stamp per stage, so any consumer can measure per-stage and end-to-end latency.

Money in order/accounting messages is ``Decimal`` (encoded as a string), never a
binary float; tick prices are floats (features only).

New fields must be appended with defaults so older payloads still decode.
"""

from __future__ import annotations

import enum
import hashlib
from decimal import Decimal
from typing import Annotated, Union

import msgspec

__all__ = [
    "SCHEMA_VERSION",
    "TickType",
    "Side",
    "OrdType",
    "TimeInForce",
    "OrdStatus",
    "Tick",
    "BookUpdate",
    "MAX_BOOK_LEVELS",
    "TickBatch",
    "Signal",
    "OrderIntent",
    "ExecutionReport",
    "Control",
    "ControlAck",
    "Heartbeat",
    "Message",
    "DecodeError",
    "encode",
    "decode",
    "decode_as",
    "check",
    "signal_id_for",
    "client_order_id_for",
]

SCHEMA_VERSION = 1

DecodeError = msgspec.DecodeError  # the only error decoders raise (ValidationError subclasses it)


class TickType(enum.IntEnum):
    TRADE = 1
    QUOTE = 2


class Side(enum.IntEnum):
    BUY = 1
    SELL = -1


class OrdType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"


class TimeInForce(enum.StrEnum):
    DAY = "DAY"
    IOC = "IOC"
    GTC = "GTC"


class OrdStatus(enum.StrEnum):
    PENDING_NEW = "PENDING_NEW"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


# Constrained field types: NaN, inf and negatives fail decoding with a ValidationError.
Px = Annotated[float, msgspec.Meta(ge=0.0, le=1e12)]
Qty = Annotated[float, msgspec.Meta(ge=0.0, le=1e15)]
Sym = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Ts = Annotated[int, msgspec.Meta(ge=0)]
Id = Annotated[str, msgspec.Meta(max_length=64)]

_COMMON = dict(array_like=True, frozen=True, tag_field="kind")


class Tick(msgspec.Struct, tag="tick", gc=False, **_COMMON):
    """A trade print or a top-of-book quote update for one symbol.

    For a TRADE, ``price``/``size`` are the print and ``side`` the aggressor
    (+1 buyer-initiated, -1 seller-initiated, 0 unknown); bid/ask fields carry the
    last known quote when the source has one, else 0. For a QUOTE, bid/ask are the
    (NBBO) top of book and price/size are 0.
    """

    symbol: Sym
    type: TickType
    ts_event: Ts
    seq: Ts  # per-symbol sequence within its source, deterministic for a given input
    price: Px = 0.0
    size: Qty = 0.0
    bid: Px = 0.0
    bid_size: Qty = 0.0
    ask: Px = 0.0
    ask_size: Qty = 0.0
    side: Annotated[int, msgspec.Meta(ge=-1, le=1)] = 0
    ts_ingest: Ts = 0  # set by the publisher when the tick enters the bus
    v: int = SCHEMA_VERSION


MAX_BOOK_LEVELS = 5_000  # per side of one BookUpdate (Binance's largest REST snapshot)

# Level values are plain floats on purpose: a NaN or negative level is skipped and counted by
# the book (pattern_engine/book.py), it does not dead-letter the ticks travelling with it.
Levels = Annotated[list[tuple[float, float]], msgspec.Meta(max_length=MAX_BOOK_LEVELS)]


class BookUpdate(msgspec.Struct, tag="book", gc=False, **_COMMON):
    """One level-2 order-book message of one symbol: a snapshot or a delta.

    ``bids`` / ``asks`` are ``(price, qty)`` pairs; in a delta ``qty`` is the new absolute
    quantity at that price (0 deletes the level); a snapshot replaces the book. The
    Binance diff-depth update ids ``first_id`` (U), ``last_id`` (u) and ``prev_last_id``
    (pu, USD-M futures) let the engine check the chain (0: the source has none; a snapshot
    carries its ``lastUpdateId`` in ``last_id``). Order against the ticks of the same
    ``TickBatch``: see ``TickBatch``.
    """

    symbol: Sym
    ts_event: Ts
    seq: Ts  # per-symbol sequence of the book messages within their source (ticks count apart)
    snapshot: bool = False
    first_id: Ts = 0
    last_id: Ts = 0
    prev_last_id: Ts = 0
    bids: Levels = []
    asks: Levels = []
    v: int = SCHEMA_VERSION


class TickBatch(msgspec.Struct, tag="ticks", gc=False, **_COMMON):
    """Several ticks in one stream entry (the unit of ``md:ticks:{shard}``), and the order-book
    messages of the same stretch of the stream.

    Order rule: ``ticks`` and ``books`` are each in stream order; a tick's row reflects every
    book message of its symbol that comes before it in the stream, i.e. (the producer emits a
    time-ordered stream, book messages before ticks stamped the same instant) every book
    message of an earlier entry, and those of this entry up to the first one stamped *later*
    than the tick (``ts_event``). ``books`` was appended in a later version: entries
    without it decode with ``books = []``.
    """

    ticks: list[Tick]
    ts_ingest: int = 0
    v: int = SCHEMA_VERSION
    books: list[BookUpdate] = []


class Signal(msgspec.Struct, tag="signal", **_COMMON):
    signal_id: Id
    symbol: Sym
    detector: Id
    side: Side
    strength: Annotated[float, msgspec.Meta(ge=0.0, le=1e12)]  # detector-specific score
    price: Annotated[float, msgspec.Meta(gt=0.0, le=1e12)]  # reference price (last trade or mid)
    tick_seq: int
    ts_event: int
    ts_ingest: int
    ts_signal: int
    volatility: Px = 0.0  # per-tick realised volatility (price units) at detection
    model_id: str = ""
    model_version: str = ""
    v: int = SCHEMA_VERSION


class OrderIntent(msgspec.Struct, tag="intent", **_COMMON):
    client_order_id: Id
    signal_id: Id
    strategy: Id
    symbol: Sym
    side: Side
    qty: Decimal
    order_type: OrdType
    tif: TimeInForce
    ref_price: Decimal
    tick_seq: int
    ts_event: int
    ts_ingest: int
    ts_signal: int
    ts_intent: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    sizing: dict[str, float] = {}
    v: int = SCHEMA_VERSION


class ExecutionReport(msgspec.Struct, tag="exec", **_COMMON):
    exec_id: str  # unique per report; deterministic from the order and event
    client_order_id: str
    signal_id: str
    strategy: str
    symbol: str
    side: Side
    status: OrdStatus
    order_qty: Decimal
    cum_qty: Decimal
    leaves_qty: Decimal
    last_qty: Decimal  # quantity of this fill (0 if not a fill)
    last_px: Decimal  # price of this fill (0 if not a fill)
    avg_px: Decimal
    fee: Decimal
    ts_event: int
    ts_ingest: int
    ts_signal: int
    ts_intent: int
    ts_exec: int
    reason: str = ""  # reject reason code
    venue: str = ""
    venue_trade_id: str = ""
    text: str = ""
    v: int = SCHEMA_VERSION


class Control(msgspec.Struct, tag="ctl", **_COMMON):
    """A command to the services (kill switch, resume, limits)."""

    # Bounded like the other messages' ids: an oversized command is dead-lettered, not
    # applied (its reason would otherwise reach the database and the Redis mirror).
    request_id: Id
    command: Id  # e.g. "kill.engage", "kill.release", "kill.status"
    scope: Annotated[str, msgspec.Meta(max_length=128)] = "global"  # "global", "strategy:<name>", "symbol:<sym>"
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    actor: Id = ""
    # At most 16 arguments, short names, values up to 4 KiB (a list of symbols fits).
    args: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=64)], Annotated[str, msgspec.Meta(max_length=4096)]],
        msgspec.Meta(max_length=16),
    ] = {}
    ts: int = 0
    v: int = SCHEMA_VERSION


class ControlAck(msgspec.Struct, tag="ack", **_COMMON):
    request_id: str
    service: str
    ok: bool
    state: str = ""
    detail: str = ""
    ts: int = 0
    v: int = SCHEMA_VERSION


class Heartbeat(msgspec.Struct, tag="hb", **_COMMON):
    service: str
    instance: str
    ts: int
    status: str  # "ok", "degraded", "error", "stopping"
    detail: str = ""
    counters: dict[str, int] = {}
    started_at: int = 0
    v: int = SCHEMA_VERSION


Message = Union[Tick, TickBatch, Signal, OrderIntent, ExecutionReport, Control, ControlAck, Heartbeat]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)
_typed: dict[type, msgspec.msgpack.Decoder] = {}


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes) -> Message:
    """Decode any wire message; raises only ``DecodeError`` (msgspec.DecodeError)."""
    try:
        return _decoder.decode(data)
    except UnicodeDecodeError as e:  # msgspec lets invalid UTF-8 in a tag string escape
        raise DecodeError(f"invalid utf-8: {e}") from e


def decode_as(data: bytes, typ: type) -> msgspec.Struct:
    """Decode a message of one expected type; raises only ``DecodeError``."""
    dec = _typed.get(typ)
    if dec is None:
        dec = _typed[typ] = msgspec.msgpack.Decoder(typ)
    try:
        return dec.decode(data)
    except UnicodeDecodeError as e:
        raise DecodeError(f"invalid utf-8: {e}") from e


def _finite_decimals(msg: msgspec.Struct) -> str | None:
    for name in msg.__struct_fields__:
        val = getattr(msg, name)
        if isinstance(val, Decimal) and not val.is_finite():
            return f"non-finite decimal in {name}"
    return None


def _tick_problem(t: Tick, _trade: TickType = TickType.TRADE) -> str | None:
    # Hot path (every tick of every batch): enum members are singletons, so `is` suffices.
    if t.type is _trade:
        return "trade without price" if t.price <= 0.0 else None
    return "quote without bid or ask" if t.bid <= 0.0 and t.ask <= 0.0 else None


def check(msg: msgspec.Struct) -> str | None:
    """Semantic checks that typed decoding cannot express; returns a reason or None."""
    if isinstance(msg, OrderIntent):
        bad = _finite_decimals(msg)
        if bad:
            return bad
        if msg.qty <= 0:
            return "non-positive qty"
        if msg.ref_price <= 0:
            return "non-positive ref_price"
        return None
    if isinstance(msg, ExecutionReport):
        return _finite_decimals(msg)
    if isinstance(msg, Tick):
        return _tick_problem(msg)
    if isinstance(msg, TickBatch):
        # One entry is one unit of delivery: a bad tick dead-letters its whole entry (kept
        # whole in the dead-letter stream, so nothing is lost) rather than half-processing it.
        for t in msg.ticks:
            bad = _tick_problem(t)
            if bad:
                return f"tick seq {t.seq}: {bad}"
    return None


def _hid(prefix: str, *parts: object) -> str:
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=10).hexdigest()
    return f"{prefix}{h}"


def signal_id_for(symbol: str, ts_event: int, tick_seq: int, detector: str) -> str:
    """Deterministic signal id: the same tick and detector always give the same id."""
    return _hid("sg-", symbol, ts_event, tick_seq, detector)


def client_order_id_for(signal_id: str, strategy: str, leg: int = 0) -> str:
    """Deterministic client order id derived from the signal id (replays are recognised)."""
    return _hid("co-", signal_id, strategy, leg)
