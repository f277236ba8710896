"""Wire codecs: round trips, garbage yields only the declared error, deterministic ids."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import messages as m

symbols = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
prices = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=0, max_value=2**62)

ticks = st.builds(
    m.Tick,
    symbol=symbols,
    type=st.sampled_from(list(m.TickType)),
    ts_event=ints,
    seq=ints,
    price=prices,
    size=prices,
    bid=prices,
    bid_size=prices,
    ask=prices,
    ask_size=prices,
    side=st.sampled_from([-1, 0, 1]),
    ts_ingest=ints,
)
decimals = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1e9"), places=4, allow_nan=False)
intents = st.builds(
    m.OrderIntent,
    client_order_id=st.text(max_size=30),
    signal_id=st.text(max_size=30),
    strategy=st.text(max_size=20),
    symbol=symbols,
    side=st.sampled_from(list(m.Side)),
    qty=decimals,
    order_type=st.sampled_from(list(m.OrdType)),
    tif=st.sampled_from(list(m.TimeInForce)),
    ref_price=decimals,
    tick_seq=ints,
    ts_event=ints,
    ts_ingest=ints,
    ts_signal=ints,
    ts_intent=ints,
    limit_price=st.none() | decimals,
    sizing=st.dictionaries(st.text(max_size=10), st.floats(allow_nan=False), max_size=4),
)
signals = st.builds(
    m.Signal,
    signal_id=st.text(max_size=30),
    symbol=symbols,
    detector=st.text(max_size=20),
    side=st.sampled_from(list(m.Side)),
    strength=prices,
    price=st.floats(min_value=1e-6, max_value=1e9),
    tick_seq=ints,
    ts_event=ints,
    ts_ingest=ints,
    ts_signal=ints,
    volatility=prices,
)
reports = st.builds(
    m.ExecutionReport,
    exec_id=st.text(max_size=30),
    client_order_id=st.text(max_size=30),
    signal_id=st.text(max_size=30),
    strategy=st.text(max_size=20),
    symbol=symbols,
    side=st.sampled_from(list(m.Side)),
    status=st.sampled_from(list(m.OrdStatus)),
    order_qty=decimals,
    cum_qty=decimals,
    leaves_qty=decimals,
    last_qty=decimals,
    last_px=decimals,
    avg_px=decimals,
    fee=decimals,
    ts_event=ints,
    ts_ingest=ints,
    ts_signal=ints,
    ts_intent=ints,
    ts_exec=ints,
    reason=st.text(max_size=20),
)
controls = st.builds(m.Control, request_id=st.text(max_size=20), command=st.text(max_size=20), args=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
heartbeats = st.builds(m.Heartbeat, service=st.text(max_size=10), instance=st.text(max_size=10), ts=ints, status=st.text(max_size=8), counters=st.dictionaries(st.text(max_size=8), ints, max_size=5))
any_message = st.one_of(ticks, st.builds(m.TickBatch, st.lists(ticks, max_size=5), ints), signals, intents, reports, controls, heartbeats)


@given(any_message)
@settings(max_examples=300)
def test_round_trip_any_message(msg):
    data = m.encode(msg)
    assert m.decode(data) == msg
    assert m.decode_as(data, type(msg)) == msg


@given(st.binary(max_size=512))
@settings(max_examples=500)
def test_garbage_bytes_raise_only_decode_error(data):
    for typ in (m.TickBatch, m.Signal, m.OrderIntent, m.ExecutionReport, m.Control):
        try:
            m.decode_as(data, typ)
        except m.DecodeError:
            pass


@given(any_message, st.sampled_from([m.TickBatch, m.Signal, m.OrderIntent, m.ExecutionReport, m.Control]))
@settings(max_examples=300)
def test_wrong_schema_is_a_decode_error(msg, typ):
    data = m.encode(msg)
    if isinstance(msg, typ):
        assert m.decode_as(data, typ) == msg
    else:
        with pytest.raises(m.DecodeError):
            m.decode_as(data, typ)


@given(any_message, st.data())
@settings(max_examples=200)
def test_mutated_payload_raises_only_decode_error(msg, data):
    raw = bytearray(m.encode(msg))
    if raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        m.decode(bytes(raw))
    except m.DecodeError:
        pass


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_non_finite_or_negative_prices_fail_validation(bad):
    t = m.Tick("AAA", m.TickType.TRADE, 1, 1, 10.0, 1.0)
    raw = msgspec.msgpack.encode(["tick", "AAA", 1, 1, 1, bad, 1.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 1])
    assert m.decode_as(m.encode(t), m.Tick) == t
    with pytest.raises(m.DecodeError):
        m.decode_as(raw, m.Tick)


def test_semantic_check_catches_non_finite_decimal_and_zero_qty():
    base = dict(client_order_id="c", signal_id="s", strategy="x", symbol="AAA", side=m.Side.BUY,
                order_type=m.OrdType.MARKET, tif=m.TimeInForce.DAY, tick_seq=1, ts_event=1, ts_ingest=1,
                ts_signal=1, ts_intent=1)
    ok = m.OrderIntent(qty=Decimal("1"), ref_price=Decimal("10"), **base)
    assert m.check(ok) is None
    nan = m.decode_as(m.encode(m.OrderIntent(qty=Decimal("NaN"), ref_price=Decimal("10"), **base)), m.OrderIntent)
    assert "non-finite" in m.check(nan)
    assert m.check(m.OrderIntent(qty=Decimal("0"), ref_price=Decimal("10"), **base)) == "non-positive qty"


def test_ids_are_deterministic_and_distinct():
    a = m.signal_id_for("BAC", 123, 7, "momentum_burst")
    assert a == m.signal_id_for("BAC", 123, 7, "momentum_burst")
    assert a != m.signal_id_for("BAC", 123, 8, "momentum_burst")
    assert a != m.signal_id_for("BAC", 123, 7, "breakout")
    c = m.client_order_id_for(a, "trend")
    assert c == m.client_order_id_for(a, "trend") and c != m.client_order_id_for(a, "other")
    assert a.startswith("sg-") and c.startswith("co-")


def test_every_message_has_kind_tag_and_version():
    t = m.Tick("AAA", m.TickType.QUOTE, 1, 1, bid=1.0, ask=2.0)
    arr = msgspec.msgpack.decode(m.encode(t))
    assert arr[0] == "tick" and arr[-1] == m.SCHEMA_VERSION
