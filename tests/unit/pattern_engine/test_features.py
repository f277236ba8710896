"""Incremental features equal the same features recomputed from scratch over the whole history."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.messages import Tick, TickBatch, TickType
from pattern_engine.engine import PatternEngine
from pattern_engine.features import FEATURES, FeatureParams, alpha
from pattern_engine.kernel import z_norm
from pattern_engine.pattern_config import PatternConfig
from tests.unit.pattern_engine.stubs import T0

# --- the reference: from-scratch formulas over each symbol's full history --------------------


def ema_seeded(xs: list[float], a: float) -> float:
    """EMA seeded with the first value, as a closed-form weighted sum."""
    m = len(xs)
    return (1 - a) ** (m - 1) * xs[0] + sum(a * (1 - a) ** (m - 1 - j) * xs[j] for j in range(1, m))


def ewm_zero(xs: list[float], a: float) -> float:
    """EWMA started from zero, as a closed-form weighted sum."""
    m = len(xs)
    return sum(a * (1 - a) ** (m - 1 - j) * x for j, x in enumerate(xs))


def bias_corrected_vol(returns: list[float], a: float) -> float:
    if not returns:
        return 0.0
    return math.sqrt(ewm_zero([r * r for r in returns], a) / (1 - (1 - a) ** len(returns)))


def reference(ticks: list[Tick], fp: FeatureParams) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for sym in dict.fromkeys(t.symbol for t in ticks):
        bid = ask = bsz = asz = mid = spread = last = 0.0
        last_sign = 0
        qimbs: list[float] = []
        refs: list[float] = []
        trades: list[tuple[float, float, int, int]] = []  # price, size, sign, ts
        for t in (t for t in ticks if t.symbol == sym):
            quote = False
            if t.bid > 0:
                bid, bsz, quote = t.bid, t.bid_size, True
            if t.ask > 0:
                ask, asz, quote = t.ask, t.ask_size, True
            if quote:
                if bid > 0 and ask > 0:
                    mid = (bid + ask) / 2
                    spread = (ask - bid) / mid * 1e4
                if bsz + asz > 0:
                    qimbs.append((bsz - asz) / (bsz + asz))
            if t.type == TickType.TRADE and t.price > 0:
                sign = t.side
                if sign == 0:
                    if mid > 0 and t.price != mid:
                        sign = 1 if t.price > mid else -1
                    elif last > 0 and t.price != last:
                        sign = 1 if t.price > last else -1
                    else:
                        sign = last_sign
                last_sign = sign
                trades.append((t.price, t.size, sign, t.ts_event))
                last = t.price
                refs.append(t.price)
            elif quote and not trades and mid > 0 and (not refs or mid != refs[-1]):
                refs.append(mid)

        f = dict.fromkeys(FEATURES, 0.0)
        f.update(last=last, bid=bid, ask=ask, bid_size=bsz, ask_size=asz, mid=mid, spread_bps=spread)
        if qimbs:
            f["qimb"] = qimbs[-1]
            f["qimb_ema"] = ema_seeded(qimbs, alpha(fp.imbalance_halflife))
        if trades:
            a_flow = alpha(fp.flow_halflife)
            f["flow"] = ewm_zero([s * q for _, q, s, _ in trades], a_flow)
            f["flow_abs"] = ewm_zero([q for _, q, _, _ in trades], a_flow)
            f["flow_imb"] = f["flow"] / f["flow_abs"] if f["flow_abs"] > 0 else 0.0
            sized = [(p, q) for p, q, _, _ in trades if q > 0]
            if sized:
                if fp.vwap_halflife > 0:
                    a = alpha(fp.vwap_halflife)
                    f["vwap"] = ewm_zero([p * q for p, q in sized], a) / ewm_zero([q for _, q in sized], a)
                else:
                    f["vwap"] = sum(p * q for p, q in sized) / sum(q for _, q in sized)
            if len(trades) > 1:
                dts = [max((trades[j][3] - trades[j - 1][3]) * 1e-9, 0.0) for j in range(1, len(trades))]
                f["intertrade_s"] = ema_seeded(dts, alpha(fp.intensity_halflife))
                f["intensity"] = 1.0 / max(f["intertrade_s"], 1e-6)
        if refs:
            p = refs[-1]
            rets = [math.log(refs[j] / refs[j - 1]) for j in range(1, len(refs))]
            a_vol = alpha(fp.vol_halflife)
            f["ref"] = p
            f["ema_fast"] = ema_seeded(refs, alpha(fp.fast_halflife))
            f["ema_slow"] = ema_seeded(refs, alpha(fp.slow_halflife))
            f["ret"] = rets[-1] if rets else 0.0
            f["ret_10"] = math.log(p / refs[-11]) if len(refs) > 10 else 0.0
            f["ret_100"] = math.log(p / refs[-101]) if len(refs) > 100 else 0.0
            f["vol"] = bias_corrected_vol(rets, a_vol)
            f["vol_prev"] = bias_corrected_vol(rets[:-1], a_vol)
            f["vol_px"] = f["vol"] * p
            sig = f["vol_prev"] * p * z_norm(alpha(fp.slow_halflife))
            f["zscore"] = (p - f["ema_slow"]) / sig if rets and sig > 0 else 0.0
            f["vwap_dev_bps"] = (p / f["vwap"] - 1) * 1e4 if f["vwap"] > 0 else 0.0
            before = refs[max(0, len(refs) - 1 - fp.window) : -1]
            f["high"] = max(before) if before else p
            f["low"] = min(before) if before else p
        out[sym] = f
    return out


# --- generated tick sequences ------------------------------------------------------------------

_event = st.tuples(
    st.integers(0, 2),  # symbol
    st.sampled_from(["trade", "trade+quote", "quote", "bid", "ask"]),
    st.integers(-3, 3),  # price move in cents
    st.integers(0, 400),  # size (0 allowed)
    st.integers(-1, 1),  # aggressor side (0 = unknown)
    st.integers(-500_000, 3_000_000),  # clock step, ns (out-of-order stamps allowed)
    st.integers(0, 900),  # bid size
    st.integers(0, 900),  # ask size
)


def build(events: list[tuple]) -> list[Tick]:
    px = [10_000, 5_000, 20_000]  # cents
    seq = [0, 0, 0]
    ts = T0
    out: list[Tick] = []
    for s, kind, move, size, side, step, bsz, asz in events:
        px[s] = max(px[s] + move, 1_000)
        seq[s] += 1
        ts = max(ts + step, 0)
        p = px[s] / 100
        sym = f"SYM{s}"
        bid, ask = (p - 0.01, p + 0.01) if move >= 0 else (p - 0.02, p + 0.01)
        if kind == "trade":
            t = Tick(symbol=sym, type=TickType.TRADE, ts_event=ts, seq=seq[s], price=p, size=float(size), side=side)
        elif kind == "trade+quote":
            t = Tick(symbol=sym, type=TickType.TRADE, ts_event=ts, seq=seq[s], price=p, size=float(size),
                     side=side, bid=bid, bid_size=float(bsz), ask=ask, ask_size=float(asz))
        elif kind == "quote":
            t = Tick(symbol=sym, type=TickType.QUOTE, ts_event=ts, seq=seq[s], bid=bid, bid_size=float(bsz),
                     ask=ask, ask_size=float(asz))
        elif kind == "bid":
            t = Tick(symbol=sym, type=TickType.QUOTE, ts_event=ts, seq=seq[s], bid=bid, bid_size=float(bsz))
        else:
            t = Tick(symbol=sym, type=TickType.QUOTE, ts_event=ts, seq=seq[s], ask=ask, ask_size=float(asz))
        out.append(t)
    return out


_params = st.builds(
    FeatureParams,
    fast_halflife=st.sampled_from([1.0, 2.5, 4.0]),
    slow_halflife=st.sampled_from([3.0, 9.0]),
    vol_halflife=st.sampled_from([2.0, 6.0]),
    vwap_halflife=st.sampled_from([0.0, 3.0]),
    flow_halflife=st.sampled_from([1.5, 5.0]),
    imbalance_halflife=st.sampled_from([1.0, 3.0]),
    intensity_halflife=st.sampled_from([1.0, 4.0]),
    window=st.sampled_from([2, 3, 7]),
)


def _close(name: str, got: float, want: float) -> bool:
    tol = 1e-7 if name == "zscore" else 1e-9
    return math.isclose(got, want, rel_tol=tol, abs_tol=tol)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_event, min_size=10, max_size=250), cuts=st.lists(st.integers(1, 25), max_size=30),
       fp=_params)
def test_incremental_features_equal_from_scratch_recomputation(events, cuts, fp):
    ticks = build(events)
    engine = PatternEngine(PatternConfig(features=fp, detectors=()), capacity=1)  # capacity 1: exercises growth
    i = 0
    sizes = iter(cuts)
    while i < len(ticks):
        j = min(len(ticks), i + next(sizes, 1000))
        engine.on_batch(TickBatch(ticks=ticks[i:j]))
        i = j
        want = reference(ticks[:j], fp)
        for sym, ref in want.items():
            got = engine.state.row(sym)
            bad = {k: (got[k], v) for k, v in ref.items() if not _close(k, got[k], v)}
            assert not bad, f"{sym} after {j} ticks: (incremental, from scratch) {bad}"
    assert engine.ticks_seen == len(ticks)
    assert sum(engine.state.ticks(s) for s in engine.state.symbols) == len(ticks)


def test_symbol_registry_grows_by_doubling_and_keeps_state():
    engine = PatternEngine(PatternConfig(features=FeatureParams(), detectors=()), capacity=2)
    ticks = [Tick(symbol=f"S{i}", type=TickType.TRADE, ts_event=T0 + i, seq=1, price=10.0 + i, size=1.0)
             for i in range(9)]
    engine.on_batch(TickBatch(ticks=ticks[:2]))
    engine.on_batch(TickBatch(ticks=ticks[2:]))
    assert engine.state.capacity == 16
    assert engine.state.symbols == [f"S{i}" for i in range(9)]
    assert [engine.state.row(f"S{i}")["last"] for i in range(9)] == [10.0 + i for i in range(9)]


def test_trade_without_price_inside_a_batch_only_updates_its_quote():
    engine = PatternEngine(PatternConfig(features=FeatureParams(), detectors=()))
    engine.on_batch(TickBatch(ticks=[
        Tick(symbol="X", type=TickType.TRADE, ts_event=T0, seq=1, price=10.0, size=5.0),
        Tick(symbol="X", type=TickType.TRADE, ts_event=T0 + 1, seq=2, price=0.0, size=5.0, bid=9.0, ask=11.0),
    ]))
    row = engine.state.row("X")
    assert (row["last"], row["ref"], row["vwap"], row["mid"]) == (10.0, 10.0, 10.0, 10.0)
    assert engine.state.price_events("X") == 1
