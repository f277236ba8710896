"""Average-cost accounting of the run report: the identities the report relies on."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.report import positions_from_fills

D = Decimal


def test_long_round_trip_realises_the_difference():
    pos = positions_from_fills([("A", 1, D(10), D(100)), ("A", -1, D(10), D(110))])
    assert pos["A"].qty == 0 and pos["A"].realized == D(100) and pos["A"].avg_px == 0


def test_average_cost_and_partial_close():
    pos = positions_from_fills([("A", 1, D(10), D(100)), ("A", 1, D(10), D(110)), ("A", -1, D(5), D(120))])
    p = pos["A"]
    assert p.qty == D(15) and p.avg_px == D(105) and p.realized == D(75)


def test_flip_through_zero_opens_the_rest_at_the_fill_price():
    pos = positions_from_fills([("A", 1, D(10), D(100)), ("A", -1, D(15), D(90))])
    p = pos["A"]
    assert p.qty == D(-5) and p.avg_px == D(90) and p.realized == D(-100)


fills = st.lists(
    st.tuples(
        st.sampled_from(["A", "B"]),
        st.sampled_from([1, -1]),
        st.decimals(min_value=D("0.01"), max_value=D(1000), places=2),
        st.decimals(min_value=D("0.01"), max_value=D(1000), places=2),
    ),
    max_size=40,
)


@given(fills, st.decimals(min_value=D("0.01"), max_value=D(1000), places=2))
@settings(max_examples=300)
def test_cash_flow_plus_position_value_equals_realised_plus_unrealised(fs, mark):
    pos = positions_from_fills(fs)
    flow = sum((-(q * p) if side > 0 else q * p for _s, side, q, p in fs), D(0))
    value = sum((p.qty * mark for p in pos.values()), D(0))
    pnl = sum((p.realized + (mark - p.avg_px) * p.qty for p in pos.values()), D(0))
    assert abs((flow + value) - pnl) < D("1e-12") * (1 + abs(pnl))


def test_rejects_by_reason_adds_the_rejects_without_an_order_row():
    from backend.report import rejects_by_reason
    from execution.risk import RejectCode

    db_rejects = {"GROSS_EXPOSURE": 2, "STALE_REFERENCE_PRICE": 1}
    counters = {"rejects.GROSS_EXPOSURE": 2, "rejects.DUPLICATE_CLORDID": 5, "rejects.DUPLICATE_CLORDID_MISMATCH": 1,
                "duplicates": 6, "rejects": 3}
    assert rejects_by_reason(db_rejects, counters) == {
        "GROSS_EXPOSURE": 2, "STALE_REFERENCE_PRICE": 1, "DUPLICATE_CLORDID": 5, "DUPLICATE_CLORDID_MISMATCH": 1,
    }
    assert rejects_by_reason({}, {}) == {}
    assert {"DUPLICATE_CLORDID", "DUPLICATE_CLORDID_MISMATCH"} <= {str(c) for c in RejectCode}


def test_quantities_print_in_plain_notation():
    from backend.report import fmt_qty

    assert [fmt_qty(D(x)) for x in ("-560", "-5.6E+2", "2508.000", "0.00150", "0", "1E+3")] == [
        "-560", "-560", "2508", "0.0015", "0", "1000"]
