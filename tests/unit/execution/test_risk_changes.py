"""Risk limits changed while the gateway runs (``risk.set`` / ``risk.unset``; ``aitrader risk set``).

The key syntax and validation (exactly the file's rules), the OMS applying a change to the
very next order, refusing a bad change without touching any limit, the change's durability
(``risk_overrides`` row, audit row) and its survival across a restart, and ``risk.unset``
going back to the file.
"""

from __future__ import annotations

import uuid

import msgspec
import pytest
import sqlalchemy as sa

from common import db
from common.config import ConfigError
from common.messages import Control, ControlAck, OrdStatus, decode_as, encode
from execution.risk import RiskConfig, override_value, parse_override_key

from .conftest import LIMITS
from .test_trading_states import Gw, rows


def setc(key: str, value: str, reason: str = "desk asked", actor: str = "admin:alice") -> Control:
    return Control(request_id=uuid.uuid4().hex, command="risk.set", reason=reason, actor=actor,
                   args={"key": key, "value": value})


def unsetc(key: str, reason: str = "back to the file") -> Control:
    return Control(request_id=uuid.uuid4().hex, command="risk.unset", reason=reason, actor="admin:alice",
                   args={"key": key})


def ack_of(out: list) -> ControlAck:
    acks = [m for m in out if isinstance(m, ControlAck)]
    assert len(acks) == 1, out
    return acks[0]


# -- keys and values ------------------------------------------------------------------------------
@pytest.mark.parametrize("key,parsed", [
    ("global.max_open_orders", ("global", "", "max_open_orders")),
    ("defaults.max_order_qty", ("defaults", "", "max_order_qty")),
    ("symbols.BTCUSDT.max_position_qty", ("symbols", "BTCUSDT", "max_position_qty")),
    ("symbols.BRK.B.max_order_qty", ("symbols", "BRK.B", "max_order_qty")),
    ("kill_triggers.daily_loss", ("kill_triggers", "", "daily_loss")),
])
def test_keys_name_one_limit_of_the_file(key, parsed):
    assert parse_override_key(key) == parsed


@pytest.mark.parametrize("key", [
    "global.nope", "defaults", "max_order_qty", "symbols.BTCUSDT", "symbols..max_order_qty",
    "symbols.BTC USDT.max_order_qty", "kill_triggers.bogus", "limits.max_order_qty", "", "x" * 200,
])
def test_anything_else_is_refused_naming_the_key(key):
    with pytest.raises(ConfigError, match="risk key"):
        parse_override_key(key)


def test_values_lists_and_off():
    assert override_value("global.restricted_symbols", "AAA, BBB,") == ["AAA", "BBB"]
    assert override_value("global.restricted_symbols", "-") == []
    assert override_value("kill_triggers.daily_loss", "off") is None
    assert override_value("defaults.max_order_qty", " 12.5 ") == "12.5"


def test_an_override_is_validated_exactly_as_the_file_and_defaults_still_flow_to_symbols():
    base = RiskConfig.from_dict(LIMITS)
    cfg = base.with_override("defaults.max_order_qty", "700")
    assert cfg.limits("BAC").max_order_qty == 700  # symbols without their own value follow the default
    assert cfg.limits("BTCUSDT").max_order_qty == 2  # the file's own symbol value still wins
    assert cfg.limits("BTCUSDT").max_position_qty == 3
    assert cfg.overrides == {"defaults.max_order_qty": "700"}
    cfg2 = cfg.with_override("symbols.NEW.max_order_qty", "5")
    assert cfg2.limits("NEW").max_order_qty == 5 and cfg2.limits("NEW").max_position_qty == 2000
    assert cfg2.with_override("defaults.max_order_qty", None).limits("BAC").max_order_qty == 1000
    assert base.limits("BAC").max_order_qty == 1000  # nothing shared between versions
    for key, bad, msg in [
        ("defaults.max_order_qty", "-5", "defaults.max_order_qty must be a finite number > 0"),
        ("defaults.max_order_qty", "abc", "defaults.max_order_qty must be a number"),
        ("global.max_open_orders", "1.5", "global.max_open_orders must be a whole number"),
        ("kill_triggers.message_rate_window_s", "off", "message_rate_window_s"),
        ("global.max_gross_notional", "NaN", "global.max_gross_notional"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            base.with_override(key, bad)


# -- the OMS --------------------------------------------------------------------------------------
def test_a_change_applies_to_the_next_order_is_durable_and_survives_a_restart(engine, risk_config, instruments):
    g = Gw(engine, risk_config, instruments)
    g.tick(BAC=10.0)
    assert g.order("a", "BAC", 1, "600", "10").status == OrdStatus.ACCEPTED
    out, counters = g.run(setc("defaults.max_order_qty", "500"))
    ack = ack_of(out)
    assert (ack.ok, ack.state) == (True, "SET")
    assert ack.detail == "defaults.max_order_qty: 1000 -> 500"
    assert counters["control.risk.set"] == 1
    rej = g.order("b", "BAC", 1, "600", "10")
    assert (rej.status, rej.reason) == (OrdStatus.REJECTED, "MAX_QTY")
    assert g.order("c", "BAC", 1, "500", "10").status == OrdStatus.ACCEPTED

    (row,) = rows(engine, db.RiskOverride.__table__, order_by="key")
    assert (row["key"], row["value"], row["actor"], row["reason"]) == (
        "defaults.max_order_qty", "500", "admin:alice", "desk asked")
    audit = [r for r in rows(engine, db.AuditLog.__table__) if r["entity"] == "risk_limit"]
    assert [(r["action"], r["entity_id"]) for r in audit] == [("risk.set", "defaults.max_order_qty")]
    assert audit[0]["detail"]["detail"] == ack.detail

    g2 = Gw(engine, risk_config, instruments)  # a restart: the file's limits, then the database's overrides
    g2.tick(BAC=10.0)
    assert g2.order("d", "BAC", 1, "600", "10").reason == "MAX_QTY"
    out, _ = g2.run(unsetc("defaults.max_order_qty"))
    assert ack_of(out).detail == "defaults.max_order_qty: 500 -> 1000 (the file's value)"
    assert rows(engine, db.RiskOverride.__table__, order_by="key") == []
    assert g2.order("e", "BAC", 1, "600", "10").status == OrdStatus.ACCEPTED


def test_a_bad_change_is_refused_and_changes_nothing(engine, risk_config, instruments):
    g = Gw(engine, risk_config, instruments)
    g.tick(BAC=10.0)
    before = g.oms.risk.config.as_dict()
    for ctl_, why in [
        (setc("defaults.max_order_qty", "-1"), "must be a finite number > 0"),
        (setc("global.bogus", "1"), "not a risk limit"),
        (setc("defaults.max_order_qty", "5", reason="  "), "needs a reason"),
        (Control(request_id="x1", command="risk.set", reason="r", actor="a", args={"key": "defaults.max_order_qty"}),
         "needs args.value"),
        (Control(request_id="x2", command="risk.unset", reason="r", actor="a"), "needs args.key"),
    ]:
        out, counters = g.run(ctl_)
        ack = ack_of(out)
        assert (ack.ok, ack.state) == (False, "REFUSED") and why in ack.detail, ack
        assert counters[f"control.{ctl_.command}.refused"] == 1
    assert g.oms.risk.config.as_dict() == before
    assert rows(engine, db.RiskOverride.__table__, order_by="key") == []
    refused = [r["action"] for r in rows(engine, db.AuditLog.__table__) if r["entity"] == "risk_limit"]
    assert refused == ["risk.set.refused"] * 4 + ["risk.unset.refused"]
    assert g.order("ok", "BAC", 1, "600", "10").status == OrdStatus.ACCEPTED


def test_throttles_restricted_symbols_and_triggers_change_live(engine, risk_config, instruments):
    g = Gw(engine, risk_config, instruments)
    g.tick(BAC=10.0, XYZ=10.0)
    assert ack_of(g.run(setc("global.max_orders_per_sec", "2"))[0]).ok
    got = [g.order(f"t{i}", "BAC", 1, "1", "10") for i in range(3)]
    assert [r.reason for r in got] == ["", "", "ORDER_RATE"]
    ack = ack_of(g.run(setc("global.restricted_symbols", "XYZ, QQQ"))[0])
    assert ack.detail == "global.restricted_symbols: HALTED -> QQQ,XYZ"
    g.clock.now += 2_000_000_000
    assert g.order("x", "XYZ", 1, "1", "10").reason == "RESTRICTED_SYMBOL"
    assert ack_of(g.run(setc("kill_triggers.reject_streak", "7"))[0]).ok
    assert g.oms.triggers.config.reject_streak == 7
    assert ack_of(g.run(setc("kill_triggers.reject_streak", "off"))[0]).detail == \
        "kill_triggers.reject_streak: 7 -> off"
    assert g.oms.triggers.config.reject_streak is None


def test_an_override_the_limits_no_longer_accept_stops_the_start(engine, risk_config, instruments):
    with engine.begin() as c:
        c.execute(sa.insert(db.RiskOverride.__table__).values(
            key="defaults.max_order_qty", value="-3", actor="x", reason="y", request_id="z", ts=1))
    with pytest.raises(ConfigError, match="defaults.max_order_qty"):
        Gw(engine, risk_config, instruments)


def test_control_args_are_bounded():
    ok = Control(request_id="r", command="risk.set", args={"key": "k", "value": "v" * 4096})
    assert decode_as(encode(ok), Control) == ok
    for bad in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"key": "v" * 4097}):
        raw = encode(msgspec.structs.replace(ok, args=bad))  # encoding does not check the bounds
        with pytest.raises(msgspec.ValidationError, match=r"\$\[6\]"):  # the args field
            decode_as(raw, Control)


# -- the CLI against a running gateway -----------------------------------------------------------
def _cli(common, *argv: str) -> int:
    from backend import cli

    return cli.cmd_risk(cli._parser().parse_args(list(argv)), common)


async def test_cli_risk_set_show_unset_through_a_running_gateway(common, ex_settings, risk_file, clean_env, capsys):
    import asyncio
    import json

    from .conftest import start_gateway

    clean_env.setenv("AITRADER_EX_RISK_FILE", str(risk_file))
    gw = await start_gateway(common, ex_settings.model_copy(update={"control_poll_ms": 20.0}))
    try:
        rc = await asyncio.to_thread(_cli, common, "risk", "set", "symbols.BAC.max_order_qty", "7",
                                     "--reason", "news pending")
        assert rc == 0 and capsys.readouterr().out.strip() == "symbols.BAC.max_order_qty: 1000 -> 7"
        assert gw.gw.oms.risk.config.limits("BAC").max_order_qty == 7
        rc = await asyncio.to_thread(_cli, common, "risk", "set", "defaults.max_order_qty", "900",
                                     "--reason", "via the database", "--via", "db", "--json")
        doc = json.loads(capsys.readouterr().out)
        assert rc == 0 and (doc["ok"], doc["via"]) == (True, "database")
        assert gw.gw.oms.risk.config.limits("XYZ").max_order_qty == 900

        assert await asyncio.to_thread(_cli, common, "risk", "show", "--json") == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["symbols"]["BAC"]["max_order_qty"] == "7" and shown["defaults"]["max_order_qty"] == "900"
        assert [(c["key"], c["value"], c["reason"]) for c in shown["changes"]] == [
            ("symbols.BAC.max_order_qty", "7", "news pending"), ("defaults.max_order_qty", "900", "via the database")]
        assert shown["changes"][0]["actor"].startswith("cli:")
        assert await asyncio.to_thread(_cli, common, "risk", "show") == 0
        out = capsys.readouterr().out
        assert "symbols.BAC.max_order_qty  7" in out and "news pending" in out

        # refused before sending: no reason, bad key, bad value, missing value
        for argv, words in [
            (("set", "defaults.max_order_qty", "5"), "needs --reason"),
            (("set", "defaults.nope", "5", "--reason", "x"), "not a risk limit"),
            (("set", "defaults.max_order_qty", "-5", "--reason", "x"), "must be a finite number > 0"),
            (("set", "defaults.max_order_qty", "--reason", "x"), "needs KEY VALUE"),
            (("unset", "defaults.max_order_qty", "5", "--reason", "x"), "takes only KEY"),
        ]:
            assert await asyncio.to_thread(_cli, common, "risk", *argv) == 2
            err = capsys.readouterr().err
            assert words in err and err.count("\n") == 1, err
        rc = await asyncio.to_thread(_cli, common, "risk", "unset", "symbols.BAC.max_order_qty", "--reason", "done")
        assert rc == 0 and "7 -> 900 (the file's value)" in capsys.readouterr().out
    finally:
        assert await gw.stop() == 0
    assert [r["key"] for r in rows(gw.gw._engine or db.make_engine(common.db_url), db.RiskOverride.__table__,
                                   order_by="key")] == ["defaults.max_order_qty"]
