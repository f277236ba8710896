"""Trading states per scope, REDUCING mode (RELIABILITY B3) and automatic kill triggers (B5).

The OMS runs over a real database (``store``) on a fake clock: the tests decide what time it
is. Run with ``-s`` to see the figures (B3 counts, B5 time-to-halt per trigger).
"""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal

import msgspec
import pytest
import sqlalchemy as sa
import yaml

from common import db, streams
from common.bus import Entry, connect
from common.messages import (
    Control,
    ControlAck,
    ExecutionReport,
    Heartbeat,
    OrdStatus,
    OrdType,
    decode,
    encode,
)
from execution.kill_switch import GLOBAL, KillSwitches, TradingStateName
from execution.oms import OrderManager
from execution.risk import RejectCode, RiskConfig, RiskEngine
from execution.store import Store
from execution.venues.simulator import SimulatedVenue

from .conftest import LIMITS, ROOT, batch, intent, run_batch, start_gateway, trade
from .test_controls import Clock, make_config

D = Decimal
SEC = 1_000_000_000
MS = 1_000_000
HALTED, REDUCING, ACTIVE = TradingStateName.HALTED, TradingStateName.REDUCING, TradingStateName.ACTIVE


def ctl(command: str, scope: str = GLOBAL, reason: str = "", actor: str = "tester", rid: str = "r") -> Control:
    return Control(request_id=rid, command=command, scope=scope, reason=reason, actor=actor)


class Gw:
    """The OMS over a real store, on a fake clock, fed one batch at a time like the service feeds it."""

    def __init__(self, engine, config: RiskConfig, instruments, cash: str = "1000000", clock: Clock | None = None):
        self.clock = clock or Clock()
        self.store = Store(engine)
        self.venue = SimulatedVenue(instruments, fee_bps=D(1), min_fee=D("0.01"))
        self.risk = RiskEngine(config, instruments, self.venue.fee, clock=self.clock)
        self.oms = OrderManager(self.risk, self.venue, D(cash), clock=self.clock)
        self.oms.load(self.store.snapshot(GLOBAL, 1000))
        self.n = 0
        self.seq = 0

    def run(self, *msgs) -> tuple[list, dict[str, int]]:
        entries = []
        for m in msgs:
            self.n += 1
            stream = streams.CONTROL if isinstance(m, Control) else streams.INTENTS
            entries.append(Entry(stream, f"{self.n}-0".encode(), m, b""))
        out, counters, _plan = run_batch(self.oms, entries, self.store)
        return out, counters

    def tick(self, **marks: float) -> None:
        ticks = []
        for sym, px in marks.items():
            self.seq += 1
            ticks.append(trade(sym, self.seq, px, size=1e9))
        self.run(msgspec.structs.replace(batch(*ticks), ts_ingest=self.clock.now))

    def order(self, cid: str, symbol: str, side: int, qty: str, ref: str, *, strategy: str = "s1",
              limit: str | None = None) -> ExecutionReport:
        it = intent(symbol, side, qty, ref, tick_seq=self.seq, cid=cid, strategy=strategy,
                    order_type=OrdType.LIMIT if limit else OrdType.MARKET, limit=limit)
        out, _ = self.run(it)
        return [x for x in out if isinstance(x, ExecutionReport) and x.client_order_id == cid][-1]

    def triggers(self):
        """What the gateway's idle hook does: evaluate, and commit a halt."""
        got = self.oms.check_triggers()
        if got is not None:
            self.store.write(got[0])
            if not got[0].outbox:  # only the baselines were written: no halt
                return None
        return got


def rows(engine, table, order_by="id") -> list[dict]:
    with engine.connect() as c:
        q = sa.select(table)
        if order_by in table.c:
            q = q.order_by(table.c[order_by])
        return [dict(r) for r in c.execute(q).mappings()]


# -- the rules of one scope and of several --------------------------------------------------------
def test_most_restrictive_scope_wins_and_scopes_are_validated():
    ks = KillSwitches()
    assert ks.effective("s1", "BAC") == (ACTIVE, GLOBAL)
    assert ks.apply(ctl("kill.reduce", "strategy:s1"), 1).changed
    assert ks.apply(ctl("kill.engage", "symbol:BAC"), 2).changed
    assert ks.effective("s1", "BAC") == (HALTED, "symbol:BAC")
    assert ks.effective("s1", "XYZ") == (REDUCING, "strategy:s1")
    assert ks.effective("s2", "XYZ") == (ACTIVE, GLOBAL)
    assert ks.apply(ctl("kill.reduce"), 3).changed
    assert ks.effective("s2", "XYZ") == (REDUCING, GLOBAL)
    assert ks.effective("s2", "BAC") == (HALTED, "symbol:BAC")  # a halted symbol beats a reducing global
    assert ks.apply(ctl("kill.engage"), 4).changed
    assert ks.effective("s2", "XYZ") == (HALTED, GLOBAL)
    d = ks.apply(ctl("kill.status"), 5)
    assert d.ok and not d.changed and d.state == HALTED
    assert [k.scope for k in ks.non_active()] == ["global", "strategy:s1", "symbol:BAC"]
    assert "symbol:BAC HALTED by tester" in d.detail and "strategy:s1 REDUCING" in d.detail
    for bad in ("symbol:", "venue:X", "strategy:" + "x" * 60, ""):
        d = ks.apply(ctl("kill.engage", bad if bad else "nope"), 6)
        assert not d.ok and not d.changed, bad
    assert len(ks.non_active()) == 3


def test_release_needs_a_reason_and_an_actor_and_loosening_to_reducing_too():
    ks = KillSwitches()
    ks.apply(ctl("kill.engage", "symbol:BAC", "drill"), 1)
    for c, why in [(ctl("kill.release", "symbol:BAC", ""), "reason"),
                   (ctl("kill.release", "symbol:BAC", "ok", actor=" "), "actor"),
                   (ctl("kill.reduce", "symbol:BAC", ""), "reason")]:
        d = ks.apply(c, 2)
        assert not d.ok and not d.changed and why in d.detail and d.state == HALTED
    d = ks.apply(ctl("kill.reduce", "symbol:BAC", "unwind only", actor="cli:ops"), 3)
    assert d.ok and d.changed and d.state == REDUCING
    assert ks.apply(ctl("kill.engage", "symbol:BAC"), 4).state == HALTED  # tightening needs no reason
    d = ks.apply(ctl("kill.release", "symbol:BAC", "checked", actor="cli:ops"), 5)
    assert d.ok and d.changed and d.state == ACTIVE and ks.scopes["symbol:BAC"].actor == "cli:ops"
    assert ks.effective("s", "BAC") == (ACTIVE, GLOBAL)
    d = ks.apply(ctl("kill.release", "symbol:BAC", ""), 6)  # even when already active
    assert not d.ok


def test_a_halt_read_with_new_intents_goes_first(engine, risk_config, instruments):
    g = Gw(engine, risk_config, instruments)
    g.tick(BAC=10.0)
    it = intent("BAC", 1, "10", "10", tick_seq=g.seq, cid="same-batch")
    out, _ = g.run(it, ctl("kill.engage", "symbol:BAC", "bad prints"))
    assert isinstance(out[0], ControlAck) and out[0].state == "HALTED"
    [rep] = [x for x in out if isinstance(x, ExecutionReport)]
    assert (rep.client_order_id, rep.status, rep.reason) == ("same-batch", OrdStatus.REJECTED, "KILL_SWITCH")
    assert g.venue.working() == []
    # other commands keep their place: a cancel read with its order's intent still finds it
    g.run(ctl("kill.release", "symbol:BAC", "ok"))
    it2 = intent("BAC", 1, "10", "10", tick_seq=g.seq, cid="then-cancel", order_type=OrdType.LIMIT, limit="9.95")
    cancel = Control(request_id="c1", command="order.cancel", reason="r", actor="t",
                     args={"client_order_id": "then-cancel"})
    out, _ = g.run(it2, cancel)
    assert [x.status for x in out if isinstance(x, ExecutionReport)][-1] == OrdStatus.CANCELLED


def test_scope_halt_cancels_only_its_orders_refuses_only_its_intents_and_persists(engine, risk_config, instruments):
    g = Gw(engine, risk_config, instruments)
    g.tick(BAC=10.0, XYZ=20.0)
    resting = {
        "bac-s1": g.order("bac-s1", "BAC", 1, "10", "10", limit="9.95"),
        "xyz-s1": g.order("xyz-s1", "XYZ", 1, "10", "20", limit="19.90"),
        "xyz-s2": g.order("xyz-s2", "XYZ", 1, "10", "20", strategy="s2", limit="19.90"),
    }
    assert {r.status for r in resting.values()} == {OrdStatus.ACCEPTED}

    out, _ = g.run(ctl("kill.engage", "symbol:BAC", "bad prints", rid="e1"))
    cancelled = {x.client_order_id: x.reason for x in out if isinstance(x, ExecutionReport)}
    assert cancelled == {"bac-s1": "KILL_SWITCH"}
    [ack] = [x for x in out if isinstance(x, ControlAck)]
    assert ack.ok and ack.state == "HALTED"
    out, _ = g.run(ctl("kill.engage", "strategy:s2", "runaway", rid="e2"))
    assert {x.client_order_id for x in out if isinstance(x, ExecutionReport)} == {"xyz-s2"}
    assert set(g.oms.orders) == {"xyz-s1"}

    refused = g.order("bac-new", "BAC", 1, "1", "10")
    assert (refused.status, refused.reason) == (OrdStatus.REJECTED, "KILL_SWITCH")
    assert refused.text.startswith("HALTED at symbol:BAC: bad prints")
    assert g.order("xyz-s2-new", "XYZ", 1, "1", "20", strategy="s2").reason == "KILL_SWITCH"
    ok = g.order("xyz-new", "XYZ", 1, "1", "20")
    assert (ok.status, ok.reason) == (OrdStatus.ACCEPTED, "")
    assert g.oms.kill.state == ACTIVE  # the global scope is untouched

    # the database holds every scope's state, event and audit row; a new OMS comes back with them
    states = {r["scope"]: (r["state"], r["reason"]) for r in rows(engine, db.TradingState.__table__, "scope")}
    assert states == {"symbol:BAC": ("HALTED", "bad prints"), "strategy:s2": ("HALTED", "runaway")}
    events = [(e["scope"], e["action"], e["request_id"]) for e in rows(engine, db.KillSwitchEvent.__table__)]
    assert events == [("symbol:BAC", "engage", "e1"), ("strategy:s2", "engage", "e2")]
    audit = [(a["action"], a["entity_id"], a["detail"]["cancelled"]) for a in rows(engine, db.AuditLog.__table__)]
    assert audit == [("kill.engage", "symbol:BAC", 1), ("kill.engage", "strategy:s2", 1)]

    g2 = Gw(engine, risk_config, instruments, clock=g.clock)
    assert g2.oms.switches.effective("s1", "BAC") == (HALTED, "symbol:BAC")
    g2.tick(BAC=10.0, XYZ=20.0)
    assert g2.order("bac-after", "BAC", 1, "1", "10").reason == "KILL_SWITCH"
    out, _ = g2.run(ctl("kill.release", "symbol:BAC", "feed fixed", rid="x1"))
    assert [x.state for x in out if isinstance(x, ControlAck)] == ["ACTIVE"]
    assert g2.order("bac-after2", "BAC", 1, "1", "10").status == OrdStatus.ACCEPTED
    out, _ = g2.run(ctl("kill.status", rid="st"))
    [ack] = [x for x in out if isinstance(x, ControlAck)]
    assert ack.state == "ACTIVE" and ack.detail == "strategy:s2 HALTED by tester: runaway"


# -- B3: REDUCING -----------------------------------------------------------------------------------
def test_b3_reducing_passes_only_exposure_reducing_orders(engine, instruments):
    """Random orders against long, short and flat positions under a global REDUCING state."""
    config = make_config(defaults={"max_order_qty": "100000", "max_order_notional": "10000000",
                                   "max_position_qty": "1000000", "max_position_notional": "100000000"},
                         **{"global": {"max_gross_notional": "1000000000"}})
    g = Gw(engine, config, instruments, cash="100000000")
    marks = {"LNG": 10.0, "SHT": 20.0, "FLT": 30.0}
    g.tick(**marks)
    g.order("o-lng", "LNG", 1, "500", "10")
    g.order("o-sht", "SHT", -1, "300", "20")
    g.tick(**marks)  # the market orders fill
    pf = g.oms.portfolio
    assert (pf.position("LNG"), pf.position("SHT"), pf.position("FLT")) == (500, -300, 0)
    g.run(ctl("kill.reduce", reason="B3 drill"))

    rng = random.Random(3)
    counts = {"passed": 0, "REDUCING_ONLY": 0, "other": 0}
    for i in range(600):
        sym = rng.choice(list(marks))
        side = rng.choice((1, -1))
        qty = str(rng.randint(1, 250))
        px = marks[sym]
        limit = f"{px * (0.99 if side > 0 else 1.01):.2f}"  # resting: the open orders pile up
        pos, same = pf.position(sym), pf.open_qty(sym, side)
        reduces = side * pos < 0 and same + D(qty) <= abs(pos)
        rep = g.order(f"b3-{i}", sym, side, qty, str(px), limit=limit)
        if rep.status == OrdStatus.ACCEPTED:
            counts["passed"] += 1
            assert reduces, (sym, side, qty, pos, same)
        elif rep.reason == RejectCode.REDUCING_ONLY:
            counts["REDUCING_ONLY"] += 1
            assert not reduces, (sym, side, qty, pos, same)
        else:
            counts["other"] += 1
        # whatever is open can never increase |position| nor flip it, even if all of it fills
        for s in marks:
            p, buys, sells = pf.position(s), pf.open_qty(s, 1), pf.open_qty(s, -1)
            assert (buys == 0 and sells <= p) if p > 0 else (sells == 0 and buys <= -p), (s, p, buys, sells)
    assert counts["other"] == 0 and counts["passed"] > 0 and counts["REDUCING_ONLY"] > 400
    # two reducing sells cannot flip the position
    assert pf.open_qty("LNG", -1) <= 500 and pf.open_qty("SHT", 1) <= 300
    print(f"\nB3: REDUCING, 600 random orders against long 500 / short 300 / flat: {counts['passed']} "
          f"exposure-reducing passed, {counts['REDUCING_ONLY']} refused REDUCING_ONLY, 0 increased exposure; "
          f"open reducing orders LNG sell {pf.open_qty('LNG', -1)} of 500, SHT buy {pf.open_qty('SHT', 1)} of 300")


def test_reducing_at_symbol_scope_two_sells_cannot_flip_and_release_restores(engine, risk_config, instruments):
    g = Gw(engine, risk_config, instruments)
    g.tick(BAC=10.0, XYZ=10.0)
    g.order("buy", "BAC", 1, "100", "10")
    g.tick(BAC=10.0)
    g.run(ctl("kill.reduce", "symbol:BAC", "unwind"))
    assert g.order("sell-60a", "BAC", -1, "60", "10", limit="10.05").status == OrdStatus.ACCEPTED
    second = g.order("sell-60b", "BAC", -1, "60", "10", limit="10.05")
    assert (second.status, second.reason) == (OrdStatus.REJECTED, "REDUCING_ONLY")
    assert second.text.startswith("REDUCING at symbol:BAC: unwind")
    assert g.order("sell-40", "BAC", -1, "40", "10", limit="10.05").status == OrdStatus.ACCEPTED
    assert g.order("buy-more", "BAC", 1, "1", "10").reason == "REDUCING_ONLY"
    assert g.order("xyz", "XYZ", 1, "1", "10").status == OrdStatus.ACCEPTED  # other symbols trade
    g.run(ctl("kill.release", "symbol:BAC", "done"))
    assert g.order("buy-again", "BAC", 1, "1", "10").status == OrdStatus.ACCEPTED


# -- B5: automatic triggers ---------------------------------------------------------------------------
TRIGGERS = {
    "daily_loss": "500", "drawdown": "800", "reject_streak": 5, "message_rate_denials": 10,
    "message_rate_window_s": 10, "stale_market_data_s": 30, "upstream_silence_s": 20,
}


def _only(name: str, **extra) -> RiskConfig:
    """The test limits with one trigger enabled (the others disabled with null or 0)."""
    trig = {k: (v if k == name or k == "message_rate_window_s" else (0 if i % 2 else None))
            for i, (k, v) in enumerate(TRIGGERS.items())}
    trig.update(extra.pop("kill_triggers", {}))
    return make_config(kill_triggers=trig, **extra)


def _until_halted(g: Gw, t_condition: int, step_ms: int = 100, limit_s: int = 10):
    """Call the idle hook every ``step_ms`` of fake time until the gateway halts; the time it took."""
    while g.clock.now - t_condition <= limit_s * SEC:
        got = g.triggers()
        if got is not None:
            return got, g.clock.now - t_condition
        assert g.oms.kill.state == ACTIVE
        g.clock.now += step_ms * MS
    raise AssertionError("not halted")


def _check_halt(g: Gw, engine, got, trigger: str) -> ControlAck:
    _ch, res = got
    assert g.oms.kill.halted and g.oms.kill.actor == f"auto:{trigger}" and not g.oms.orders
    alerts = [decode(d) for s, d in res.messages if s == streams.ALERTS]
    assert len(alerts) == 1 and alerts[0].args["trigger"] == trigger and alerts[0].reason.startswith(trigger)
    assert res.counters[f"kill_triggers.{trigger}"] == 1
    [ev] = rows(engine, db.KillSwitchEvent.__table__)
    assert (ev["action"], ev["actor"], ev["scope"]) == ("engage", f"auto:{trigger}", "global")
    audit = [a for a in rows(engine, db.AuditLog.__table__) if a["action"] == "kill.engage"]
    assert len(audit) == 1 and audit[0]["actor"] == f"auto:{trigger}"
    [st] = rows(engine, db.TradingState.__table__, "scope")
    assert st["state"] == "HALTED" and st["actor"] == f"auto:{trigger}"
    # durable: in the outbox with the cancels and the ack, so the bus gets them after a crash
    assert streams.ALERTS in [s for _seq, s, _p in g.store.outbox_after(0)]
    return alerts[0]


B5_FIGURES: dict[str, float] = {}


def _report(trigger: str, took: int, alert: Control) -> None:
    B5_FIGURES[trigger] = took / SEC
    print(f"\nB5 {trigger}: halted {took / SEC:.1f} s after the condition (fake clock, idle hook every 100 ms); "
          f"alert: {alert.reason}")
    assert took <= 5 * SEC


def test_b5_daily_loss_halts_within_5s(engine, instruments):
    g = Gw(engine, _only("daily_loss"), instruments)
    g.tick(BAC=100.0)
    g.triggers()  # armed: equity at the day start
    g.order("long", "BAC", 1, "100", "100")
    g.tick(BAC=100.0)
    g.order("resting", "BAC", -1, "1", "100", limit="100.50")
    g.clock.now += SEC
    assert g.triggers() is None
    g.tick(BAC=96.0)  # -400 on the position (and fees): within the limit
    g.clock.now += SEC
    assert g.triggers() is None
    g.tick(BAC=94.9)  # -510 and fees: beyond
    got, took = _until_halted(g, g.clock.now)
    alert = _check_halt(g, engine, got, "daily_loss")
    assert D(alert.args["value"]) < D(-500)
    _report("daily_loss", took, alert)


def test_a_restart_does_not_forgive_the_days_loss_or_the_drawdown(engine, instruments):
    cfg = _only("daily_loss", kill_triggers={"drawdown": "700"})
    g = Gw(engine, cfg, instruments)
    g.tick(BAC=100.0)
    g.triggers()
    g.order("long", "BAC", 1, "100", "100")
    g.tick(BAC=100.0)  # filled
    g.tick(BAC=103.0)  # +300: the peak
    g.clock.now += 2 * SEC
    assert g.triggers() is None
    g.tick(BAC=96.0)  # -400 (and fees) on the day, -700 from the peak: within both limits
    g.clock.now += 2 * SEC
    assert g.triggers() is None
    [saved] = rows(engine, db.GatewayState.__table__, "key")
    assert saved["key"] == "kill_triggers.baselines"
    day_start, peak = D(saved["value"]["day_start"]), D(saved["value"]["peak"])
    assert peak - day_start > D(298)  # +300 less the fee

    g2 = Gw(engine, cfg, instruments, clock=g.clock)  # a restart, same day
    g2.tick(BAC=96.0)
    g2.clock.now += SEC
    assert g2.triggers() is None
    assert (g2.oms.triggers.day_start, g2.oms.triggers.peak) == (day_start, peak)
    g2.tick(BAC=94.5)  # -150 more: -550 on the day (a fresh baseline would say -150)
    got, _took = _until_halted(g2, g2.clock.now)
    assert _check_halt(g2, engine, got, "daily_loss").args["threshold"] == "-500"

    # the day's loss is still beyond the limit: a release the same day halts again at once
    g2.run(ctl("kill.release", GLOBAL, "reviewed", actor="admin"))
    g2.clock.now += SEC
    got, _took = _until_halted(g2, g2.clock.now)
    assert got[1].counters["kill_triggers.daily_loss"] == 1


def test_baselines_after_a_release_and_on_a_new_day(engine, instruments):
    g = Gw(engine, _only("drawdown"), instruments)
    g.tick(BAC=100.0)
    g.triggers()
    g.order("long", "BAC", 1, "100", "100")
    g.tick(BAC=100.0)
    g.tick(BAC=105.0)  # the peak: +500
    g.clock.now += 2 * SEC
    g.triggers()
    peak = D(rows(engine, db.GatewayState.__table__, "key")[0]["value"]["peak"])
    g.run(ctl("kill.engage", GLOBAL, "manual", actor="ops"))
    g.tick(BAC=101.0)
    g.run(ctl("kill.release", GLOBAL, "reviewed", actor="admin"))
    g.clock.now += 2 * SEC
    assert g.triggers() is None  # armed afresh: the drawdown counts from the equity at the release
    g.clock.now += 2 * SEC
    assert g.triggers() is None
    [saved] = rows(engine, db.GatewayState.__table__, "key")
    assert D(saved["value"]["peak"]) == peak - D(400)
    g.clock.now += 86_400 * SEC  # a new UTC day: its start is written at once
    g.tick(BAC=101.0)
    g.triggers()
    [saved2] = rows(engine, db.GatewayState.__table__, "key")
    assert saved2["value"]["day"] == saved["value"]["day"] + 1


def test_unreadable_baselines_start_afresh(engine, instruments):
    with engine.begin() as c:
        c.execute(sa.insert(db.GatewayState.__table__).values(
            key="kill_triggers.baselines", value={"day": "x", "day_start": "nan?", "peak": None}, ts=1))
    g = Gw(engine, _only("daily_loss"), instruments)
    assert (g.oms.triggers.day_start, g.oms.triggers.peak) == (None, None)


def test_b5_drawdown_halts_within_5s_measured_from_the_peak(engine, instruments):
    g = Gw(engine, _only("drawdown"), instruments)
    g.tick(BAC=100.0)
    g.order("long", "BAC", 1, "100", "100")
    g.tick(BAC=100.0)
    g.triggers()
    g.clock.now += SEC
    g.tick(BAC=110.0)  # peak: +1000
    g.clock.now += SEC
    assert g.triggers() is None
    g.tick(BAC=102.5)  # 750 below the peak, still above the start: no halt
    g.clock.now += SEC
    assert g.triggers() is None
    g.tick(BAC=101.9)  # 810 below the peak
    got, took = _until_halted(g, g.clock.now)
    alert = _check_halt(g, engine, got, "drawdown")
    _report("drawdown", took, alert)


def test_b5_reject_streak_halts_within_5s_and_kill_rejects_do_not_count(engine, instruments):
    g = Gw(engine, _only("reject_streak"), instruments)
    g.tick(BAC=10.0, XYZ=10.0)
    g.triggers()
    g.run(ctl("kill.engage", "symbol:XYZ", "x"))
    for i in range(10):
        assert g.order(f"k{i}", "XYZ", 1, "1", "10").reason == "KILL_SWITCH"
    for i in range(4):
        assert g.order(f"bad{i}", "BAC", 1, "0.5", "10").reason == "INVALID_QTY"
    assert g.order("good", "BAC", 1, "1", "10", limit="9.90").status == OrdStatus.ACCEPTED  # resets the streak
    for i in range(4):
        g.order(f"bad2-{i}", "BAC", 1, "0.5", "10")
    g.clock.now += SEC
    assert g.triggers() is None
    g.order("bad-fifth", "BAC", 1, "5000", "10")  # MAX_QTY: the 5th in a row
    got, took = _until_halted(g, g.clock.now)
    alert = _check_halt_scoped(g, engine, got, "reject_streak")
    _report("reject_streak", took, alert)


def _check_halt_scoped(g, engine, got, trigger):
    """As _check_halt, with a symbol scope halted before the trigger."""
    _ch, res = got
    assert g.oms.kill.halted and g.oms.kill.actor == f"auto:{trigger}" and not g.oms.orders
    alerts = [decode(d) for s, d in res.messages if s == streams.ALERTS]
    assert len(alerts) == 1 and alerts[0].args == {"trigger": trigger, "value": "5", "threshold": "5"}
    events = [(e["scope"], e["actor"]) for e in rows(engine, db.KillSwitchEvent.__table__)]
    assert events[-1] == ("global", f"auto:{trigger}")
    return alerts[0]


def test_b5_message_rate_breach_halts_within_5s(engine, instruments):
    g = Gw(engine, _only("message_rate_denials", **{"global": {"max_messages_per_sec": 5}}), instruments)
    g.tick(BAC=10.0)
    g.triggers()
    g.run(*[intent("BAC", 1, "1", "10", tick_seq=1, cid=f"a{i}", order_type=OrdType.LIMIT,
                   limit="9.90") for i in range(12)])  # 5 pass, 7 denied
    g.clock.now += SEC
    assert g.triggers() is None and len(g.oms.orders) == 5
    g.clock.now += 20 * SEC  # the first denials leave the 10 s window
    g.tick(BAC=10.0)
    _out, counters = g.run(*[intent("BAC", 1, "1", "10", tick_seq=1, cid=f"b{i}",
                                   order_type=OrdType.LIMIT, limit="9.90") for i in range(16)])
    assert counters["rejects.MESSAGE_RATE"] == 11
    got, took = _until_halted(g, g.clock.now)
    alert = _check_halt(g, engine, got, "message_rate")
    assert alert.args["value"] == "11"
    _report("message_rate", took, alert)


def test_b5_stale_market_data_halts_within_5s_only_with_open_orders(engine, instruments):
    g = Gw(engine, _only("stale_market_data_s"), instruments)
    g.tick(BAC=10.0)
    g.triggers()
    g.clock.now += 60 * SEC  # no ticks, nothing open: an idle gateway is not halted
    assert g.triggers() is None
    g.tick(BAC=10.0)
    t_tick = g.clock.now
    g.order("resting", "BAC", 1, "1", "10", limit="9.90")
    g.clock.now += 29 * SEC
    assert g.triggers() is None
    got, took = _until_halted(g, t_tick + 30 * SEC)
    _report("stale_market_data", took, _check_halt(g, engine, got, "stale_market_data"))


def test_b5_upstream_silence_halts_within_5s_and_a_clean_stop_is_not_silence(engine, instruments):
    g = Gw(engine, _only("upstream_silence_s"), instruments)
    g.triggers()
    mon = g.oms.triggers
    mon.on_heartbeat("pattern_engine", "ok", g.clock.now)
    mon.on_heartbeat("pattern_engine", "stopping", g.clock.now)
    mon.on_heartbeat("mock_mcp", "ok", g.clock.now)  # not watched
    g.clock.now += 60 * SEC
    assert g.triggers() is None
    mon.on_heartbeat("strategy_engine", "ok", g.clock.now)
    t_last = g.clock.now
    g.clock.now += 19 * SEC
    assert g.triggers() is None
    got, took = _until_halted(g, t_last + 20 * SEC)
    alert = _check_halt(g, engine, got, "upstream_silence")
    assert alert.args["service"] == "strategy_engine"
    _report("upstream_silence", took, alert)


def test_triggers_watch_only_while_active_and_rearm_after_a_release(engine, instruments):
    g = Gw(engine, _only("reject_streak"), instruments)
    g.tick(BAC=10.0)
    g.triggers()
    for i in range(5):
        g.order(f"bad{i}", "BAC", 1, "0.5", "10")
    g.clock.now += SEC
    assert g.triggers() is not None and g.oms.kill.halted
    g.clock.now += SEC
    assert g.triggers() is None  # halted: nothing more to do
    g.run(ctl("kill.reduce", reason="unwind", actor="cli:ops"))
    g.clock.now += SEC
    assert g.triggers() is None  # REDUCING is an operator's choice: triggers stay quiet
    g.run(ctl("kill.release", reason="sizing fixed", actor="cli:ops"))
    g.clock.now += SEC
    assert g.triggers() is None and g.oms.kill.state == ACTIVE  # re-armed: the old streak is gone
    assert [e["actor"] for e in rows(engine, db.KillSwitchEvent.__table__)] == ["auto:reject_streak", "cli:ops",
                                                                                  "cli:ops"]
    # released right after a firing, with no check in between: the old streak does not fire again
    for i in range(5):
        g.order(f"bad-again{i}", "BAC", 1, "0.5", "10")
    g.clock.now += SEC
    assert g.triggers() is not None
    g.run(ctl("kill.release", reason="fixed again", actor="cli:ops"))
    g.clock.now += SEC
    assert g.triggers() is None and g.oms.kill.state == ACTIVE


def test_trigger_thresholds_are_validated_naming_the_key():
    from common.config import ConfigError

    for key, bad in [("daily_loss", "-1"), ("drawdown", "x"), ("reject_streak", "2.5"), ("stale_market_data_s", True),
                     ("upstream_services", "strategy_engine"), ("message_rate_window_s", 0), ("nope", 1)]:
        doc = {**LIMITS, "kill_triggers": {key: bad}}
        with pytest.raises(ConfigError, match=f"kill_triggers.{key}"):
            RiskConfig.from_dict(doc)
    off = RiskConfig.from_dict({**LIMITS, "kill_triggers": {"daily_loss": 0, "drawdown": None}}).triggers
    assert off.daily_loss is None and off.drawdown is None
    shipped = RiskConfig.load(ROOT / "config" / "risk.yml").triggers
    assert shipped.upstream_silence_s and shipped.stale_market_data_s and shipped.reject_streak


# -- the service: a trigger fires from the gateway's own hooks ----------------------------------------
async def test_gateway_halts_on_its_own_and_alerts(common, ex_settings, redis_url, tmp_path):
    """The real service: a reject streak (after a batch) and upstream silence (idle, heartbeats read from Redis)."""
    doc = {**LIMITS, "kill_triggers": {"reject_streak": 3, "upstream_silence_s": 1}}
    path = tmp_path / "risk-triggers.yml"
    path.write_text(yaml.safe_dump(doc))
    settings = ex_settings.model_copy(update={"risk_file": path})
    r = connect(redis_url)

    async def wait_halted(timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = await r.hgetall(streams.KILL_STATE)
            if st.get(b"state") == b"HALTED":
                return st
            await asyncio.sleep(0.02)
        raise AssertionError(f"not halted: {await r.hgetall(streams.stats_key('execution'))} {gw.gw.counters} "
                             f"{gw.gw.oms.triggers.streak} {gw.gw.oms.triggers.armed}")

    async def xadd(stream, msg):
        await r.xadd(stream, {b"d": encode(msg)})

    gw = await start_gateway(common, settings)
    try:
        await xadd(streams.ticks_stream(0), batch(trade("BAC", 1, 10.0)))
        for i in range(3):
            await xadd(streams.INTENTS, intent("BAC", 1, "0.5", "10", tick_seq=1, cid=f"bad{i}"))
        st = await wait_halted()
        assert st[b"actor"] == b"auto:reject_streak"
        await xadd(streams.CONTROL, Control("rel", "kill.release", reason="fixed", actor="tester"))
        deadline = time.monotonic() + 10
        while (await r.hgetall(streams.KILL_STATE)).get(b"state") != b"ACTIVE":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        t0 = time.monotonic()
        hb = Heartbeat(service="strategy_engine", instance="x", ts=time.time_ns(), status="ok")
        await xadd(streams.HEARTBEATS, hb)
        st = await wait_halted()
        silent_s = time.monotonic() - t0
        assert st[b"actor"] == b"auto:upstream_silence"
    finally:
        assert await gw.stop() == 0
    alerts = [decode(f[b"d"]) for _i, f in await r.xrange(streams.ALERTS)]
    assert [(a.actor, a.command) for a in alerts] == [("auto:reject_streak", "kill.engage"),
                                                      ("auto:upstream_silence", "kill.engage")]
    stats = await r.hgetall(streams.stats_key("execution"))
    assert int(stats[b"kill_triggers.reject_streak"]) == 1 and int(stats[b"kill_triggers.upstream_silence"]) == 1
    eng = db.make_engine(common.db_url)
    try:
        events = [(e["action"], e["actor"]) for e in rows(eng, db.KillSwitchEvent.__table__)]
    finally:
        eng.dispose()
    assert events == [("engage", "auto:reject_streak"), ("release", "tester"), ("engage", "auto:upstream_silence")]
    print(f"\nB5 service: reject streak halted from the batch hook; upstream silence (limit 1 s) halted "
          f"{silent_s:.1f} s after the last heartbeat")
    assert silent_s < 1 + 5
    await r.aclose()
