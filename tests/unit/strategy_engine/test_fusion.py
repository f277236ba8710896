"""Signal fusion: agreement gives one decision, conflicts follow the configured rule, votes expire."""

from __future__ import annotations

import pytest

from common.messages import Side, Signal, signal_id_for
from strategy_engine.fusion import FusionBook
from strategy_engine.strategies import FusionConfig

MS = 1_000_000
SOURCES = ("momentum_burst", "breakout", "imbalance")


def sig(det: str, side: Side, t_ms: int, strength: float = 1.0, symbol: str = "AAA") -> Signal:
    ts = 1_700_000_000_000 * MS + t_ms * MS
    return Signal(signal_id=signal_id_for(symbol, ts, t_ms, det), symbol=symbol, detector=det, side=side,
                  strength=strength, price=100.0, tick_seq=t_ms, ts_event=ts, ts_ingest=ts, ts_signal=ts)


def book(**kw) -> FusionBook:
    return FusionBook(FusionConfig(**kw), SOURCES)


def run(b: FusionBook, *sigs: Signal) -> list[tuple[bool, Side | None, str]]:
    out = []
    for s in sigs:
        r = b.vote(s.detector, s)
        out.append((r.act, r.signal.side if r.signal else None, r.reason))
    return out


def test_window_zero_decides_every_signal_alone():
    b = book()
    assert run(b, sig("momentum_burst", Side.BUY, 0), sig("breakout", Side.BUY, 1), sig("imbalance", Side.SELL, 2)) \
        == [(True, Side.BUY, ""), (True, Side.BUY, ""), (True, Side.SELL, "")]


def test_agreement_within_the_window_is_one_decision_not_n():
    b = book(window_ms=1000)
    res = run(b, sig("momentum_burst", Side.BUY, 0), sig("breakout", Side.BUY, 300), sig("imbalance", Side.BUY, 900))
    assert res == [(True, Side.BUY, ""), (False, None, "merged"), (False, None, "merged")]
    # After the window a new agreeing signal is a new decision (sizing then decides any top-up).
    assert run(b, sig("breakout", Side.BUY, 2500)) == [(True, Side.BUY, "")]


def test_numbers_of_the_decision_are_recorded():
    b = book(window_ms=1000, mode="majority")
    b.vote("momentum_burst", sig("momentum_burst", Side.BUY, 0))
    r = b.vote("breakout", sig("breakout", Side.BUY, 10))
    assert r.act and r.numbers["fusion_votes_buy"] == 2 and r.numbers["fusion_votes_sell"] == 0
    assert r.numbers["fusion_sources"] == 3 and r.numbers["fusion_mode_majority"] == 1.0
    assert all(isinstance(v, float) for v in r.numbers.values())


def test_conflict_skip():
    b = book(window_ms=1000, conflict="skip")
    assert run(b, sig("momentum_burst", Side.BUY, 0), sig("breakout", Side.SELL, 100)) == [
        (True, Side.BUY, ""), (False, None, "conflict")]
    # The BUY vote expires: the SELL stands alone and is decided.
    assert run(b, sig("imbalance", Side.SELL, 1200)) == [(True, Side.SELL, "")]


def test_conflict_net_counts_weighted_votes():
    b = book(window_ms=1000, conflict="net", weights={"imbalance": 3.0})
    res = run(b, sig("momentum_burst", Side.BUY, 0), sig("breakout", Side.BUY, 10), sig("imbalance", Side.SELL, 20))
    # 1 + 1 (BUY) vs 3 (SELL): the net is SELL; the first BUY had acted, so SELL is a new decision.
    assert res == [(True, Side.BUY, ""), (False, None, "merged"), (True, Side.SELL, "")]
    tie = book(window_ms=1000, conflict="net")
    assert run(tie, sig("momentum_burst", Side.BUY, 0), sig("breakout", Side.SELL, 10))[1] == (False, None, "conflict")


def test_conflict_strongest_takes_the_strongest_vote_and_its_strength():
    b = book(window_ms=1000, conflict="strongest")
    res = run(b, sig("momentum_burst", Side.BUY, 0, strength=5.0), sig("breakout", Side.SELL, 10, strength=2.0))
    assert res == [(True, Side.BUY, ""), (False, None, "merged")]  # BUY is still strongest: already acted
    b2 = book(window_ms=1000, conflict="strongest")
    b2.vote("momentum_burst", sig("momentum_burst", Side.SELL, 0, strength=1.0))
    r = b2.vote("breakout", sig("breakout", Side.BUY, 10, strength=0.5))
    assert not r.act and r.reason == "merged"  # the SELL (1.0) beats the BUY (0.5) and had acted
    r = b2.vote("imbalance", sig("imbalance", Side.BUY, 20, strength=4.0))
    assert r.act and r.signal.side == Side.BUY and r.signal.strength == 4.0


def test_majority_waits_for_a_quorum_and_skips_conflicts():
    b = book(window_ms=1000, mode="majority")
    assert run(b, sig("momentum_burst", Side.BUY, 0), sig("breakout", Side.BUY, 10), sig("imbalance", Side.BUY, 20)) \
        == [(False, None, "quorum"), (True, Side.BUY, ""), (False, None, "merged")]
    c = book(window_ms=1000, mode="majority", conflict="skip")
    assert run(c, sig("momentum_burst", Side.BUY, 0), sig("imbalance", Side.SELL, 5), sig("breakout", Side.BUY, 10)) \
        == [(False, None, "quorum"), (False, None, "conflict"), (False, None, "conflict")]
    n = book(window_ms=1000, mode="majority", conflict="net")
    assert run(n, sig("momentum_burst", Side.BUY, 0), sig("imbalance", Side.SELL, 5), sig("breakout", Side.BUY, 10)) \
        == [(False, None, "quorum"), (False, None, "quorum"), (True, Side.BUY, "")]


def test_unanimous_needs_every_source_within_the_window():
    b = book(window_ms=1000, mode="unanimous", conflict="net")
    assert run(b, sig("momentum_burst", Side.SELL, 0), sig("breakout", Side.SELL, 800), sig("imbalance", Side.SELL, 1600)) \
        == [(False, None, "quorum"), (False, None, "quorum"), (False, None, "quorum")]  # the first vote expired
    assert run(b, sig("momentum_burst", Side.SELL, 1700)) == [(True, Side.SELL, "")]


def test_veto_blocks_only_and_never_trades():
    b = book(window_ms=1000, mode="veto", vetoers=("imbalance",))
    assert run(b, sig("imbalance", Side.SELL, 0), sig("momentum_burst", Side.BUY, 10)) == [
        (False, None, "veto_only"), (False, None, "vetoed")]
    # The vetoed BUY still votes among the traders: a SELL now conflicts with it (conflict: skip).
    assert run(b, sig("breakout", Side.SELL, 20)) == [(False, None, "conflict")]
    assert run(b, sig("breakout", Side.SELL, 1015)) == [(True, Side.SELL, "")]  # the BUY and the veto expired
    assert run(b, sig("momentum_burst", Side.BUY, 3000)) == [(True, Side.BUY, "")]


def test_symbols_are_fused_apart():
    b = book(window_ms=1000)
    assert run(b, sig("momentum_burst", Side.BUY, 0, symbol="A"), sig("breakout", Side.BUY, 1, symbol="B")) == [
        (True, Side.BUY, ""), (True, Side.BUY, "")]


@pytest.mark.parametrize("kw", [{"mode": "veto"}, {"weights": {"breakout": 0}}])
def test_bad_fusion_config_is_refused(kw):
    with pytest.raises(ValueError):
        FusionConfig(**kw)
