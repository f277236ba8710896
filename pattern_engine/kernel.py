"""The compiled hot path: one numba kernel updates per-symbol features and runs the rule detectors.

Every function compiled with numba lives in this one module on purpose: numba's on-disk
cache (``cache=True``) is invalidated only when the file defining a function changes, so a
kernel that called compiled code in another module could silently run a stale copy of it.
``features.py`` and ``detectors.py`` hold the Python-side API (state allocation, column
names, parameters, the detector interface) and refer to the constants defined here.

Layout (struct of arrays, row = symbol id):

- ``F``  float64 ``[S, NF]``: the features (columns ``0..N_FEATURES-1``, named in
  ``FEATURE_NAMES``) followed by private accumulators.
- ``I``  int64 ``[S, NI]``: counters (ticks, price events, trades), last trade time, last
  trade sign and the heads/lengths of the rolling-window deques.
- ``ring`` float64 ``[S, W+1]``: the last W+1 reference prices (price event ``t`` at ``t % (W+1)``).
- ``dq`` int64 ``[S, 2, W+1]``: monotonic deques of price-event indices (0: max, 1: min), so the
  rolling W-event high/low is O(1) amortised.
- ``hist`` float64 ``[S, HIST]``: log reference prices of the last HIST price events (the
  multi-horizon returns ``ret_10`` / ``ret_100``).
- ``last_fire`` int64 ``[S, D]`` and ``det_state`` float64 ``[S, D, DS_SIZE]``: per (symbol,
  detector) cooldown anchor and detector-private state (the imbalance run length; the EMA
  cross's two EMAs and last side).

A *price event* is a tick that sets the reference price: every trade, or, before the
symbol's first trade, a quote that moves the mid. EMAs, returns, volatility and the rolling
window advance on price events; quote features advance on every quote update.

Ticks are processed strictly in order, one at a time, so results never depend on how the
ticks were split into batches. Two drivers call the same ``_update``: ``run_batch`` (the live
hot path: features, then the rule detectors) and ``run_features`` (training: features only,
the row of each tick's symbol copied out after that tick). Same code, same order, same
state, so the batch rows equal the live ones bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "DP_SIZE",
    "DS_SIZE",
    "FEATURE_NAMES",
    "FP_SIZE",
    "KIND_BREAKOUT",
    "KIND_EMA_CROSS",
    "KIND_IMBALANCE",
    "KIND_MEAN_REVERSION",
    "KIND_MOMENTUM",
    "NEVER_FIRED",
    "NF",
    "NI",
    "N_FEATURES",
    "new_arrays",
    "run_batch",
    "run_features",
    "z_norm",
]

# --- feature columns of F (public: a model may read any of these) ----------------------------
LAST = 0  # last trade price (0 before the first trade)
BID = 1
ASK = 2
BID_SIZE = 3
ASK_SIZE = 4
MID = 5  # (bid + ask) / 2 once both sides are known
SPREAD_BPS = 6  # (ask - bid) / mid in basis points
REF = 7  # reference price: last trade, or mid before the first trade
EMA_FAST = 8
EMA_SLOW = 9
RET = 10  # log return of the last price event
VOL = 11  # EWMA realised volatility of log returns per price event (bias-corrected)
VOL_PX = 12  # VOL * REF: per-tick volatility in price units (stop distance for sizing)
VOL_PREV = 13  # VOL before the last return (normalises scores without the move inflating it)
ZSCORE = 14  # (REF - EMA_SLOW) in units of its random-walk standard deviation
VWAP = 15  # volume-weighted average trade price (EWMA over trades, or session when halflife 0)
VWAP_DEV_BPS = 16  # (REF / VWAP - 1) in basis points
QIMB = 17  # quote imbalance (bid_size - ask_size) / (bid_size + ask_size)
QIMB_EMA = 18  # EWMA of QIMB over quote updates (persistence)
FLOW = 19  # EWMA of signed trade volume (aggressor side)
FLOW_ABS = 20  # EWMA of trade volume
FLOW_IMB = 21  # FLOW / FLOW_ABS, in [-1, 1]
INTERTRADE_S = 22  # EWMA of the time between trades, seconds
INTENSITY = 23  # 1 / INTERTRADE_S: trades per second
HIGH = 24  # highest REF of the W price events before the last one
LOW = 25  # lowest REF of the W price events before the last one
RET_10 = 26  # log return over the last 10 price events (0 until there are 11)
RET_100 = 27  # log return over the last 100 price events (0 until there are 101)
N_FEATURES = 28
# private accumulators
_VAR_RAW = 28  # zero-seeded EWMA of squared returns
_VAR_DECAY = 29  # (1 - a_vol) ** n_returns, for the bias correction
_PV = 30  # VWAP numerator
_PQ = 31  # VWAP denominator
NF = 32

# Log reference prices of the last HIST price events (event t at t & (HIST - 1)), for RET_10/RET_100.
HIST = 128
RET_HORIZONS = (1, 10, 100)  # ``ret``, ``ret_10``, ``ret_100``

FEATURE_NAMES = (
    "last", "bid", "ask", "bid_size", "ask_size", "mid", "spread_bps", "ref", "ema_fast", "ema_slow",
    "ret", "vol", "vol_px", "vol_prev", "zscore", "vwap", "vwap_dev_bps", "qimb", "qimb_ema", "flow",
    "flow_abs", "flow_imb", "intertrade_s", "intensity", "high", "low", "ret_10", "ret_100",
)  # fmt: skip

# --- counter columns of I ---------------------------------------------------------------------
N_TICKS = 0
N_PRICE = 1
N_TRADES = 2
N_QIMB = 3
LAST_TRADE_TS = 4
LAST_SIGN = 5
QHEAD = 6  # + 2 * j for deque j (0 max, 1 min)
QLEN = 7
NI = 10

# --- feature parameter vector -----------------------------------------------------------------
FP_A_FAST = 0
FP_A_SLOW = 1
FP_A_VOL = 2
FP_A_VWAP = 3  # 0 = session (cumulative) VWAP
FP_A_FLOW = 4
FP_A_QIMB = 5
FP_A_INTENSITY = 6
FP_Z_NORM = 7  # random-walk std of (price - slow EMA) per unit of per-event price vol
FP_SIZE = 8

# --- detector table ---------------------------------------------------------------------------
# dint[d] = (kind, warmup ticks, cooldown ticks); dpar[d] = kind-specific parameters.
KIND_MOMENTUM = 1  # dpar: lookback, threshold, require_trend
KIND_MEAN_REVERSION = 2  # dpar: threshold, max_z
KIND_BREAKOUT = 3  # dpar: min_range_bps, min_break_bps
KIND_IMBALANCE = 4  # dpar: quote_threshold, flow_threshold, persist
KIND_EMA_CROSS = 5  # dpar: fast alpha, slow alpha
DP_SIZE = 4
# det_state[s, d, :]: imbalance: run length; ema_cross: fast EMA, slow EMA (0 before the
# symbol's first trade), the last nonzero side of fast - slow (0 before the first)
DS_SIZE = 3
NEVER_FIRED = -(1 << 40)

TRADE = 1  # messages.TickType.TRADE

# Input columns of the per-tick float matrix built from a batch.
T_TYPE, T_SIDE, T_PRICE, T_SIZE, T_BID, T_BID_SIZE, T_ASK, T_ASK_SIZE = range(8)


@njit(cache=True, nogil=True)
def _window(s: int, t: int, ref: float, F, I, ring, dq) -> None:
    """Rolling high/low of the W events before event ``t``, then push ``t`` (monotonic deques)."""
    cap = ring.shape[1]
    lo_idx = t - (cap - 1)
    for j in range(2):
        head = I[s, QHEAD + 2 * j]
        ln = I[s, QLEN + 2 * j]
        while ln > 0 and dq[s, j, head] < lo_idx:
            head = (head + 1) % cap
            ln -= 1
        F[s, HIGH + j] = ring[s, dq[s, j, head] % cap] if ln > 0 else ref
        while ln > 0:
            v = ring[s, dq[s, j, (head + ln - 1) % cap] % cap]
            if (j == 0 and v <= ref) or (j == 1 and v >= ref):
                ln -= 1
            else:
                break
        dq[s, j, (head + ln) % cap] = t
        I[s, QHEAD + 2 * j] = head
        I[s, QLEN + 2 * j] = ln + 1
    ring[s, t % cap] = ref


@njit(cache=True, nogil=True)
def _price_event(s: int, ref: float, F, I, ring, dq, hist, fp) -> None:
    t = I[s, N_PRICE]
    lp = math.log(ref)
    hist[s, t & (HIST - 1)] = lp
    if t >= 10:
        F[s, RET_10] = lp - hist[s, (t - 10) & (HIST - 1)]
    if t >= 100:
        F[s, RET_100] = lp - hist[s, (t - 100) & (HIST - 1)]
    if t == 0:
        F[s, EMA_FAST] = ref
        F[s, EMA_SLOW] = ref
        F[s, RET] = 0.0
        F[s, _VAR_DECAY] = 1.0
    else:
        a_vol = fp[FP_A_VOL]
        r = math.log(ref / F[s, REF])
        F[s, RET] = r
        F[s, VOL_PREV] = F[s, VOL]
        F[s, _VAR_RAW] += a_vol * (r * r - F[s, _VAR_RAW])
        F[s, _VAR_DECAY] *= 1.0 - a_vol
        F[s, VOL] = math.sqrt(F[s, _VAR_RAW] / (1.0 - F[s, _VAR_DECAY]))
        F[s, EMA_FAST] += fp[FP_A_FAST] * (ref - F[s, EMA_FAST])
        F[s, EMA_SLOW] += fp[FP_A_SLOW] * (ref - F[s, EMA_SLOW])
        sig = F[s, VOL_PREV] * ref * fp[FP_Z_NORM]
        F[s, ZSCORE] = (ref - F[s, EMA_SLOW]) / sig if sig > 0.0 else 0.0
    F[s, REF] = ref
    F[s, VOL_PX] = F[s, VOL] * ref
    vwap = F[s, VWAP]
    F[s, VWAP_DEV_BPS] = (ref / vwap - 1.0) * 1e4 if vwap > 0.0 else 0.0
    _window(s, t, ref, F, I, ring, dq)
    I[s, N_PRICE] = t + 1


@njit(cache=True, nogil=True)
def _update(s: int, ts: int, x, F, I, ring, dq, hist, fp) -> bool:
    """Apply one tick (row ``x`` of the input matrix) to symbol ``s``; True when it was a price event."""
    I[s, N_TICKS] += 1
    quote = False
    if x[T_BID] > 0.0:
        F[s, BID] = x[T_BID]
        F[s, BID_SIZE] = x[T_BID_SIZE]
        quote = True
    if x[T_ASK] > 0.0:
        F[s, ASK] = x[T_ASK]
        F[s, ASK_SIZE] = x[T_ASK_SIZE]
        quote = True
    if quote:
        b = F[s, BID]
        a = F[s, ASK]
        if b > 0.0 and a > 0.0:
            mid = 0.5 * (a + b)
            F[s, MID] = mid
            F[s, SPREAD_BPS] = (a - b) / mid * 1e4
        tot = F[s, BID_SIZE] + F[s, ASK_SIZE]
        if tot > 0.0:
            q = (F[s, BID_SIZE] - F[s, ASK_SIZE]) / tot
            F[s, QIMB] = q
            if I[s, N_QIMB] == 0:
                F[s, QIMB_EMA] = q
            else:
                F[s, QIMB_EMA] += fp[FP_A_QIMB] * (q - F[s, QIMB_EMA])
            I[s, N_QIMB] += 1

    ref = 0.0
    # A priceless trade (the batch-level check cannot see inside a batch) counts only its quote.
    if int(x[T_TYPE]) == TRADE and x[T_PRICE] > 0.0:
        px = x[T_PRICE]
        sz = x[T_SIZE]
        sgn = int(x[T_SIDE])
        if sgn == 0:
            # Aggressor unknown: quote rule against the mid, else tick rule, else the last sign.
            mid = F[s, MID]
            prev = F[s, LAST]
            if mid > 0.0 and px > mid:
                sgn = 1
            elif mid > 0.0 and px < mid:
                sgn = -1
            elif prev > 0.0 and px > prev:
                sgn = 1
            elif prev > 0.0 and px < prev:
                sgn = -1
            else:
                sgn = I[s, LAST_SIGN]
        I[s, LAST_SIGN] = sgn
        a_flow = fp[FP_A_FLOW]
        F[s, FLOW] += a_flow * (sgn * sz - F[s, FLOW])
        F[s, FLOW_ABS] += a_flow * (sz - F[s, FLOW_ABS])
        F[s, FLOW_IMB] = F[s, FLOW] / F[s, FLOW_ABS] if F[s, FLOW_ABS] > 0.0 else 0.0
        if sz > 0.0:
            a_vwap = fp[FP_A_VWAP]
            if a_vwap > 0.0:
                F[s, _PV] += a_vwap * (px * sz - F[s, _PV])
                F[s, _PQ] += a_vwap * (sz - F[s, _PQ])
            else:
                F[s, _PV] += px * sz
                F[s, _PQ] += sz
            F[s, VWAP] = F[s, _PV] / F[s, _PQ]
        if I[s, N_TRADES] > 0:
            dt = (ts - I[s, LAST_TRADE_TS]) * 1e-9
            dt = max(dt, 0.0)  # out-of-order exchange stamps: count as simultaneous
            if I[s, N_TRADES] == 1:
                F[s, INTERTRADE_S] = dt
            else:
                F[s, INTERTRADE_S] += fp[FP_A_INTENSITY] * (dt - F[s, INTERTRADE_S])
            F[s, INTENSITY] = 1.0 / max(F[s, INTERTRADE_S], 1e-6)
        I[s, LAST_TRADE_TS] = ts
        I[s, N_TRADES] += 1
        F[s, LAST] = px
        ref = px
    elif quote and I[s, N_TRADES] == 0 and F[s, MID] > 0.0 and (I[s, N_PRICE] == 0 or F[s, MID] != F[s, REF]):
        ref = F[s, MID]
    if ref > 0.0:
        _price_event(s, ref, F, I, ring, dq, hist, fp)
        return True
    return False


@njit(cache=True, nogil=True)
def _momentum(s: int, p, F, I, ring) -> tuple[int, float]:
    cap = ring.shape[1]
    n = int(p[0])
    t = I[s, N_PRICE] - 1
    if t < n:
        return 0, 0.0
    p0 = ring[s, (t - n) % cap]
    sig = F[s, VOL_PREV]
    if sig <= 0.0 or p0 <= 0.0:
        return 0, 0.0
    z = math.log(F[s, REF] / p0) / (sig * math.sqrt(n))
    side = 1 if z >= p[1] else (-1 if z <= -p[1] else 0)
    if side != 0 and p[2] > 0.0 and side * (F[s, EMA_FAST] - F[s, EMA_SLOW]) <= 0.0:
        return 0, 0.0
    return side, abs(z)


@njit(cache=True, nogil=True)
def _mean_reversion(s: int, p, F) -> tuple[int, float]:
    z = F[s, ZSCORE]
    az = abs(z)
    if az < p[0] or (p[1] > 0.0 and az > p[1]):
        return 0, 0.0
    return (-1 if z > 0.0 else 1), az  # fade the stretch


@njit(cache=True, nogil=True)
def _breakout(s: int, p, F, I, ring) -> tuple[int, float]:
    if I[s, N_PRICE] - 1 < ring.shape[1] - 1:
        return 0, 0.0  # window not full yet
    hi = F[s, HIGH]
    lo = F[s, LOW]
    px = F[s, REF]
    if lo <= 0.0 or (hi / lo - 1.0) * 1e4 < p[0]:
        return 0, 0.0
    if px > hi:
        b = (px / hi - 1.0) * 1e4
        return (1, b) if b >= p[1] else (0, 0.0)
    if px < lo:
        b = (1.0 - px / lo) * 1e4
        return (-1, b) if b >= p[1] else (0, 0.0)
    return 0, 0.0


@njit(cache=True, nogil=True)
def _imbalance(s: int, d: int, p, F, det_state) -> tuple[int, float]:
    sgn = 0
    acc = 0.0
    legs = 0
    ok = True
    if p[0] > 0.0:
        q = F[s, QIMB_EMA]
        if q >= p[0]:
            sgn = 1
        elif q <= -p[0]:
            sgn = -1
        else:
            ok = False
        acc += abs(q)
        legs += 1
    if ok and p[1] > 0.0:
        f = F[s, FLOW_IMB]
        sf = 1 if f >= p[1] else (-1 if f <= -p[1] else 0)
        if sf == 0 or (sgn != 0 and sf != sgn):
            ok = False
        sgn = sf
        acc += abs(f)
        legs += 1
    if not ok or legs == 0:
        sgn = 0
    run = det_state[s, d, 0]
    if sgn == 0:
        run = 0.0
    elif sgn * run > 0.0:
        run += sgn
    else:
        run = float(sgn)
    det_state[s, d, 0] = run
    if sgn != 0 and abs(run) >= p[2]:
        return sgn, acc / legs
    return 0, 0.0


@njit(cache=True, nogil=True)
def _ema_cross(s: int, d: int, px: float, p, det_state) -> tuple[int, float]:
    """Fast/slow EMA of trade prices; fire on the side of the gap when it changes sign."""
    a_f = p[0]
    a_s = p[1]
    fast = det_state[s, d, 0]
    slow = det_state[s, d, 1]
    if fast == 0.0:  # the symbol's first trade seeds both
        fast = px
        slow = px
    # nautilus_trader's EMA update, operation for operation (the first trade included), so
    # the peer benchmark's crossings agree bit for bit.
    fast = a_f * px + (1.0 - a_f) * fast
    slow = a_s * px + (1.0 - a_s) * slow
    det_state[s, d, 0] = fast
    det_state[s, d, 1] = slow
    gap = fast - slow
    side = 1 if gap > 0.0 else (-1 if gap < 0.0 else 0)
    last = det_state[s, d, 2]
    if side == 0 or side == last:
        return 0, 0.0  # equal EMAs or no change: the last side holds
    det_state[s, d, 2] = side
    if last == 0.0:
        return 0, 0.0  # the first side taken is not a cross
    return side, abs(gap) / slow * 1e4


@njit(cache=True, nogil=True)
def run_batch(sym, ts, x, F, I, ring, dq, hist, fp, dint, dpar, last_fire, det_state, out_i, out_f) -> int:
    """Process ticks ``0..len(sym)-1`` in order; write fired (tick, detector) rows; return their count.

    ``sym`` int64[n] symbol ids, ``ts`` int64[n] ts_event, ``x`` float64[n, 8] (type, side, price,
    size, bid, bid_size, ask, ask_size). ``out_i`` int64[>= n*D, 3] gets (tick index, detector
    index, side) and ``out_f`` float64[>= n*D, 3] (strength, reference price, price-unit vol).
    """
    nd = dint.shape[0]
    nout = 0
    for k in range(sym.shape[0]):
        s = sym[k]
        pe = _update(s, ts[k], x[k], F, I, ring, dq, hist, fp)
        trade_px = x[k, T_PRICE] if int(x[k, T_TYPE]) == TRADE else 0.0
        for d in range(nd):
            kind = dint[d, 0]
            side = 0
            strength = 0.0
            # Every detector's state advances on every tick, warm or cooling down or not.
            if kind == KIND_IMBALANCE:
                side, strength = _imbalance(s, d, dpar[d], F, det_state)
            elif kind == KIND_EMA_CROSS:
                if trade_px > 0.0:
                    side, strength = _ema_cross(s, d, trade_px, dpar[d], det_state)
            elif pe:
                if kind == KIND_MOMENTUM:
                    side, strength = _momentum(s, dpar[d], F, I, ring)
                elif kind == KIND_MEAN_REVERSION:
                    side, strength = _mean_reversion(s, dpar[d], F)
                elif kind == KIND_BREAKOUT:
                    side, strength = _breakout(s, dpar[d], F, I, ring)
            if side == 0:
                continue
            nt = I[s, N_TICKS]
            if nt < dint[d, 1] or nt - last_fire[s, d] < dint[d, 2]:
                continue
            ref = F[s, REF]
            vol = F[s, VOL_PX]
            # The Signal's wire constraints: price > 0, 0 <= strength/vol <= 1e12, all finite.
            if not (ref > 0.0 and 0.0 <= strength <= 1e12 and 0.0 <= vol <= 1e12):
                continue
            last_fire[s, d] = nt
            out_i[nout, 0] = k
            out_i[nout, 1] = d
            out_i[nout, 2] = side
            out_f[nout, 0] = strength
            out_f[nout, 1] = ref
            out_f[nout, 2] = vol
            nout += 1
    return nout


@njit(cache=True, nogil=True)
def run_features(sym, ts, x, F, I, ring, dq, hist, fp, out, out_n) -> None:
    """The training driver: ``_update`` each tick in order, then copy its symbol's feature row.

    Inputs as ``run_batch``. Outputs are column-major so each feature is one contiguous
    column: ``out`` float64[N_FEATURES, >= n] gets the features after tick k in ``out[:, k]``,
    ``out_n`` int64[2, >= n] the symbol's ticks and price events seen so far (warm-up filters).
    No detector runs and no detector state is touched.
    """
    nf = out.shape[0]
    for k in range(sym.shape[0]):
        s = sym[k]
        _update(s, ts[k], x[k], F, I, ring, dq, hist, fp)
        for j in range(nf):
            out[j, k] = F[s, j]
        out_n[0, k] = I[s, N_TICKS]
        out_n[1, k] = I[s, N_PRICE]


def z_norm(a_slow: float) -> float:
    """Std of (price - slow EMA) for a unit-variance random walk: (1 - a) / sqrt(a (2 - a))."""
    return (1.0 - a_slow) / math.sqrt(a_slow * (2.0 - a_slow))


def new_arrays(capacity: int, window: int, n_detectors: int) -> dict[str, np.ndarray]:
    """Freshly initialised per-symbol state arrays for ``capacity`` symbols."""
    cap = window + 1
    return {
        "F": np.zeros((capacity, NF), dtype=np.float64),
        "I": np.zeros((capacity, NI), dtype=np.int64),
        "ring": np.zeros((capacity, cap), dtype=np.float64),
        "dq": np.zeros((capacity, 2, cap), dtype=np.int64),
        "hist": np.zeros((capacity, HIST), dtype=np.float64),
        "last_fire": np.full((capacity, n_detectors), NEVER_FIRED, dtype=np.int64),
        "det_state": np.zeros((capacity, n_detectors, DS_SIZE), dtype=np.float64),
    }
