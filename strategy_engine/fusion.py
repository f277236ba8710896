"""Signal fusion: what a strategy following several sources does when they agree or conflict.

Per strategy and symbol, each source (detector name or model id) has at most one live
*vote*: the side of its latest signal, kept for ``window_ms`` of market time (the signals'
``ts_event``, so a replay fuses the same way at any speed). Each new signal updates its
source's vote, drops votes older than the window and decides at once — fusion never waits
for a timer, so it adds no latency:

``mode``
  - ``any``: the votes decide (one vote is enough); both sides present is a *conflict*;
  - ``majority``: a side acts when more than half of the strategy's sources vote for it;
  - ``unanimous``: a side acts when every source votes for it;
  - ``veto``: the ``vetoers`` never trade; any other vote acts unless a vetoer votes the
    other way within the window (``vetoed``).

``conflict`` (both sides among the votes, modes ``any`` / ``majority`` / ``veto``)
  - ``skip``: no decision (``conflict``);
  - ``net``: the side with the larger sum of ``weights`` (default 1 per source); a tie skips;
  - ``strongest``: the side of the vote with the largest ``strength x weight`` (strengths of
    different detectors are in different units: set ``weights`` to make them comparable).

Agreement yields one decision, not N: once a side has acted on a symbol, further votes for
that side within the window are ``merged`` (no intent). ``window_ms: 0`` turns fusion off:
every signal is decided alone (a strategy with one source needs nothing else).

Every decision's numbers go into the intent's ``sizing`` (``fusion_votes_buy``,
``fusion_votes_sell``, ``fusion_sources``, ``fusion_conflict``, ``fusion_net``,
``fusion_mode_<mode>``) and every non-decision is counted by the engine as
``fusion.<strategy>.<reason>`` (``merged``, ``conflict``, ``quorum``, ``vetoed``, ``veto_only``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from common.messages import Side, Signal
from strategy_engine.strategies import FusionConfig

__all__ = ["FusionBook", "FusionResult"]


@dataclass(frozen=True, slots=True)
class FusionResult:
    act: bool
    signal: Signal | None  # the signal to decide on (side = the fused side), when act
    reason: str = ""  # why not, when not act
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Vote:
    side: Side
    score: float  # strength x weight
    ts: int
    sig: Signal


class FusionBook:
    """The votes of one strategy's sources, per symbol."""

    def __init__(self, cfg: FusionConfig, sources: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.sources = sources
        self.n = len(sources)
        self.window_ns = cfg.window_ms * 1_000_000
        self.vetoers = frozenset(cfg.vetoers)
        self.weights = {s: cfg.weights.get(s, 1.0) for s in sources}
        self._votes: dict[str, dict[str, _Vote]] = {}
        self._acted: dict[str, tuple[Side, int]] = {}

    def vote(self, source: str, sig: Signal) -> FusionResult:
        if not self.window_ns:
            return FusionResult(True, sig)
        cfg = self.cfg
        t = sig.ts_event
        w = self.weights.get(source, 1.0)
        votes = self._votes.setdefault(sig.symbol, {})
        votes[source] = _Vote(sig.side, sig.strength * w, t, sig)
        cut = t - self.window_ns
        for s in [s for s, v in votes.items() if v.ts < cut]:
            del votes[s]
        traders = {s: v for s, v in votes.items() if s not in self.vetoers}
        buy = [s for s, v in votes.items() if v.side == Side.BUY]
        sell = [s for s, v in votes.items() if v.side == Side.SELL]
        net = sum(self.weights.get(s, 1.0) for s in buy) - sum(self.weights.get(s, 1.0) for s in sell)
        conflict = bool(buy) and bool(sell)
        numbers = {
            "fusion_votes_buy": float(len(buy)),
            "fusion_votes_sell": float(len(sell)),
            "fusion_sources": float(self.n),
            "fusion_window_ms": float(cfg.window_ms),
            "fusion_conflict": 1.0 if conflict else 0.0,
            "fusion_net": float(net),
            f"fusion_mode_{cfg.mode}": 1.0,
        }

        side: Side | None
        if cfg.mode == "veto":
            if source in self.vetoers:
                return FusionResult(False, None, "veto_only", numbers)
            if any(votes[s].side != sig.side for s in self.vetoers if s in votes):
                return FusionResult(False, None, "vetoed", numbers)
            side = self._resolve(traders, sig.side)
        elif cfg.mode == "any":
            side = self._resolve(votes, sig.side)
        else:
            need = self.n if cfg.mode == "unanimous" else self.n // 2 + 1
            if conflict and cfg.conflict == "skip":
                return FusionResult(False, None, "conflict", numbers)
            side = Side.BUY if len(buy) >= need else Side.SELL if len(sell) >= need else None
            if side is None:
                return FusionResult(False, None, "quorum", numbers)
        if side is None:
            return FusionResult(False, None, "conflict", numbers)

        acted = self._acted.get(sig.symbol)
        if acted is not None and acted[0] == side and t - acted[1] <= self.window_ns:
            return FusionResult(False, None, "merged", numbers)
        self._acted[sig.symbol] = (side, t)
        if side != sig.side:
            lead = max((v for v in votes.values() if v.side == side), key=lambda v: v.ts)
            sig = msgspec.structs.replace(sig, side=side, strength=lead.sig.strength)
        return FusionResult(True, sig, "", numbers)

    def _resolve(self, votes: dict[str, _Vote], own: Side) -> Side | None:
        """The side the votes give (``own`` without a conflict), per the conflict rule."""
        sides = {v.side for v in votes.values()}
        if len(sides) <= 1:
            return own
        rule = self.cfg.conflict
        if rule == "skip":
            return None
        if rule == "net":
            net = sum((1 if v.side == Side.BUY else -1) * self.weights.get(s, 1.0) for s, v in votes.items())
            return Side.BUY if net > 0 else Side.SELL if net < 0 else None
        best = max(votes.values(), key=lambda v: (v.score, v.ts))
        return best.side
