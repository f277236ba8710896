"""`aitrader orders|fills|positions|risk show` over a real migrated database written by the real OMS."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal

import pytest
import redis
import yaml

from backend import cli
from backend.views import ViewError, list_fills, list_orders, open_database, positions
from common import streams
from common.bus import Entry
from common.db import make_engine, migrate
from common.instruments import Instruments
from common.messages import OrdType, TimeInForce
from execution.oms import OrderManager
from execution.risk import RiskConfig, RiskEngine
from execution.store import Store
from execution.venues.simulator import SimulatedVenue
from execution.risk import LIMIT_KEYS
from tests.unit.execution.conftest import LIMITS, ROOT, batch, intent, trade

D = Decimal
_eid = itertools.count(1)


class Gateway:
    """The OMS on a real store and simulator, run batch by batch the way the service runs it."""

    def __init__(self, engine) -> None:
        instruments = Instruments.load(ROOT / "config" / "instruments.yml")
        self.store = Store(engine)
        venue = SimulatedVenue(instruments, fee_bps=D(1), min_fee=D("0.01"))
        self.oms = OrderManager(RiskEngine(RiskConfig.from_dict(LIMITS), instruments, venue.fee), venue, D(100000))
        self.oms.load(self.store.snapshot("global", 1000))

    def run(self, stream: str, msg) -> None:
        ents = [Entry(stream, f"{next(_eid)}-0".encode(), msg, b"")]
        plan = self.oms.stage(ents, self.store.existing(self.oms.unknown_ids(ents)))
        self.store.write(plan.tx1)
        self.oms.tx1_done(plan)
        self.oms.route(plan)
        self.store.write(plan.tx2)

    def tick(self, *ticks) -> None:
        self.run(streams.ticks_stream(0), batch(*ticks))

    def send(self, it) -> None:
        self.run(streams.INTENTS, it)


@pytest.fixture
def db_url(database_url):
    migrate(database_url)
    return database_url


@pytest.fixture
def traded(db_url):
    """AAA: buy 100 @ 10.10, sell 40 @ 10.50, a resting buy limit; BBB: a reject, then short 5 @ 20."""
    eng = make_engine(db_url)
    gw = Gateway(eng)
    gw.tick(trade("AAA", 1, 10.0))
    gw.send(intent("AAA", 1, "100", "10", cid="o1-buy", tick_seq=1))
    gw.tick(trade("AAA", 2, 10.10))
    gw.send(intent("AAA", -1, "40", "10.1", cid="o2-sell", tick_seq=2))
    gw.tick(trade("AAA", 3, 10.50))
    gw.send(intent("AAA", 1, "10", "10.5", cid="o3-rest", tick_seq=3, order_type=OrdType.LIMIT,
                   tif=TimeInForce.GTC, limit="10.45"))
    gw.send(intent("BBB", 1, "5", "20", cid="o4-nomark", strategy="s2"))
    gw.tick(trade("BBB", 1, 20.0))
    gw.send(intent("BBB", -1, "5", "20", cid="o5-short", tick_seq=1, strategy="s2"))
    gw.tick(trade("BBB", 2, 20.0))
    yield eng, gw
    eng.dispose()


@pytest.fixture
def env(clean_env, db_url, redis_url):
    clean_env.setenv("DATABASE_URL", db_url)
    clean_env.setenv("REDIS_URL", redis_url)
    return clean_env


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# -- the query module ---------------------------------------------------------------------
def test_orders_are_newest_first_with_exact_decimals_and_filters(traded):
    eng, _gw = traded
    orders = list_orders(eng)
    assert [o["client_order_id"] for o in orders] == ["o5-short", "o4-nomark", "o3-rest", "o2-sell", "o1-buy"]
    by = {o["client_order_id"]: o for o in orders}
    assert by["o1-buy"]["status"] == "FILLED" and by["o1-buy"]["avg_px"] == D("10.10")
    assert by["o3-rest"]["status"] == "ACCEPTED" and by["o3-rest"]["leaves_qty"] == D(10)
    assert by["o3-rest"]["limit_price"] == D("10.45")
    assert by["o4-nomark"]["status"] == "REJECTED" and by["o4-nomark"]["reason"] == "NO_REFERENCE_PRICE"
    assert [o["client_order_id"] for o in list_orders(eng, open_only=True)] == ["o3-rest"]
    assert {o["client_order_id"] for o in list_orders(eng, symbol="BBB")} == {"o4-nomark", "o5-short"}
    assert {o["client_order_id"] for o in list_orders(eng, strategy="s2")} == {"o4-nomark", "o5-short"}
    assert [o["client_order_id"] for o in list_orders(eng, limit=2)] == ["o5-short", "o4-nomark"]
    assert len(list_orders(eng, limit=None)) == 5


def test_positions_use_average_cost_and_agree_with_the_gateway(traded):
    eng, gw = traded
    pos = {p["symbol"]: p for p in positions(eng, {"AAA": D("10.40"), "BBB": D("19")})}
    a, b = pos["AAA"], pos["BBB"]
    assert (a["qty"], a["avg_px"], a["realized_pnl"]) == (D(60), D("10.10"), D("16"))  # 40 x (10.50 - 10.10)
    assert a["fees"] == D("0.101") + D("0.042") and a["fills"] == 2
    assert a["mark"] == D("10.40") and a["unrealized_pnl"] == D("18")  # 60 x 0.30
    assert (b["qty"], b["avg_px"], b["unrealized_pnl"]) == (D(-5), D(20), D(5))  # short gains when it falls
    for sym, p in pos.items():
        assert p["qty"] == gw.oms.portfolio.position(sym)
    no_marks = {p["symbol"]: p for p in positions(eng, None)}
    assert no_marks["AAA"]["mark"] is None and no_marks["AAA"]["unrealized_pnl"] is None


def test_fills_are_newest_first_and_carry_the_strategy(traded):
    eng, _gw = traded
    fills = list_fills(eng)
    assert [f["client_order_id"] for f in fills] == ["o5-short", "o2-sell", "o1-buy"]
    assert fills[0]["strategy"] == "s2" and fills[0]["side"] == "SELL" and fills[0]["price"] == D(20)
    assert [f["exec_id"] for f in list_fills(eng, symbol="AAA", limit=1)] == ["o2-sell:F1"]


def test_open_database_says_why_it_cannot_read(tmp_path, db_url):
    with pytest.raises(ViewError, match="no database at"):
        open_database(f"sqlite:///{tmp_path / 'absent' / 'x.db'}")
    assert not (tmp_path / "absent").exists()  # looking did not create it
    (tmp_path / "empty.db").touch()
    with pytest.raises(ViewError, match="not migrated"):
        open_database(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ViewError, match="unreachable"):
        open_database("postgresql://nobody@127.0.0.1:1/none")
    open_database(db_url).dispose()


# -- the CLI ------------------------------------------------------------------------------
def test_cli_orders_json_and_table(traded, env, capsys):
    rc, out, _ = run_cli(capsys, "orders", "--json")
    assert rc == 0
    orders = json.loads(out)["orders"]
    assert orders[0]["client_order_id"] == "o5-short"
    o3 = next(o for o in orders if o["client_order_id"] == "o3-rest")
    assert (o3["qty"], o3["limit_price"], o3["cum_qty"], o3["status"]) == ("10", "10.45", "0", "ACCEPTED")
    rc, out, _ = run_cli(capsys, "orders", "--open", "--json")
    assert [o["client_order_id"] for o in json.loads(out)["orders"]] == ["o3-rest"]
    rc, out, _ = run_cli(capsys, "orders", "--strategy", "s2", "--symbol", "BBB", "--limit", "1", "--json")
    assert [o["client_order_id"] for o in json.loads(out)["orders"]] == ["o5-short"]

    rc, out, _ = run_cli(capsys, "orders")
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 6
    header = lines[0]
    # aligned: each row's status sits under STATUS, each quantity ends under the end of QTY
    col, end = header.index("STATUS"), header.index("QTY") + len("QTY")
    statuses = [ln[col:].split()[0] for ln in lines[1:]]
    assert statuses == ["FILLED", "REJECTED", "ACCEPTED", "FILLED", "FILLED"]
    assert [ln[:end].split()[-1] for ln in lines[1:]] == ["5", "5", "10", "40", "100"]
    assert "NO_REFERENCE_PRICE" in lines[2] and "10.45" in lines[3] and "10.1 " in lines[5]


def test_cli_fills_json_and_table(traded, env, capsys):
    rc, out, _ = run_cli(capsys, "fills", "--symbol", "AAA", "--json")
    assert rc == 0
    fills = json.loads(out)["fills"]
    assert [(f["side"], f["qty"], f["price"], f["fee"]) for f in fills] == [
        ("SELL", "40", "10.5", "0.042"), ("BUY", "100", "10.1", "0.101")
    ]
    rc, out, _ = run_cli(capsys, "fills")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 4 and lines[0].split()[:4] == ["TIME", "(UTC)", "EXEC", "ID"]
    assert "o5-short:F1" in lines[1] and "0.101" in lines[3]


def test_cli_positions_with_marks_from_redis_and_without(traded, env, capsys, redis_url):
    r = redis.Redis.from_url(redis_url)
    r.hset(streams.MARKS, mapping={"AAA": "10.4", "BBB": "19.0"})
    r.close()
    rc, out, _ = run_cli(capsys, "positions", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["marks_available"] is True
    pos = {p["symbol"]: p for p in doc["positions"]}
    assert pos["AAA"] == {"symbol": "AAA", "qty": "60", "avg_px": "10.1", "realized_pnl": "16", "fees": "0.143",
                          "fills": 2, "mark": "10.4", "unrealized_pnl": "18"}
    assert pos["BBB"]["unrealized_pnl"] == "5"
    rc, out, _ = run_cli(capsys, "positions")
    assert out.splitlines()[0].split() == ["SYMBOL", "QTY", "AVG", "COST", "REALIZED", "FEES", "MARK", "UNREALIZED"]
    assert out.splitlines()[1].split() == ["AAA", "60", "10.1", "16", "0.143", "10.4", "18"]

    env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    rc, out, _ = run_cli(capsys, "positions", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["marks_available"] is False
    assert all(p["mark"] is None and p["unrealized_pnl"] is None for p in doc["positions"])
    rc, out, _ = run_cli(capsys, "positions")
    assert out.splitlines()[1].split() == ["AAA", "60", "10.1", "16", "0.143", "-", "-"]
    assert "marks unavailable" in out


def test_cli_views_on_an_empty_database(env, capsys):
    assert run_cli(capsys, "orders", "--open")[1] == "no orders open\n"
    assert run_cli(capsys, "fills")[1] == "no fills\n"
    assert json.loads(run_cli(capsys, "positions", "--json")[1])["positions"] == []


@pytest.mark.parametrize("cmd", ["orders", "fills", "positions"])
def test_cli_views_exit_1_with_one_line_when_the_database_cannot_be_read(cmd, clean_env, capsys, tmp_path):
    clean_env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    for url, words in [
        (f"sqlite:///{tmp_path / 'nowhere.db'}", "no database at"),
        ("postgresql://nobody@127.0.0.1:1/none", "database unreachable"),
    ]:
        clean_env.setenv("DATABASE_URL", url)
        rc, out, err = run_cli(capsys, cmd)
        assert (rc, out) == (1, "") and err.count("\n") == 1 and words in err, err
    (tmp_path / "bare.db").touch()
    clean_env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'bare.db'}")
    rc, _out, err = run_cli(capsys, cmd, "--json")
    assert rc == 1 and err.count("\n") == 1 and "not migrated" in err and "run_migrations" in err


def test_cli_risk_show_prints_the_file_the_gateway_loads(clean_env, capsys, tmp_path):
    f = tmp_path / "risk.yml"
    f.write_text(yaml.safe_dump(LIMITS))
    clean_env.setenv("AITRADER_EX_RISK_FILE", str(f))
    # no database at all (not the default var/aitrader.db a quick start may have left): the file's limits
    clean_env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'absent.db'}")
    rc, out, _ = run_cli(capsys, "risk", "show", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["risk_file"] == str(f)
    assert doc["defaults"] == LIMITS["defaults"]
    assert doc["symbols"]["BTCUSDT"] == {**LIMITS["defaults"], "max_order_qty": "2", "max_position_qty": "3"}
    assert doc["overrides"] == {"BTCUSDT": ["max_order_qty", "max_position_qty"]}
    rc, out, _ = run_cli(capsys, "risk", "show")
    lines = out.splitlines()
    assert str(f) in lines[0]
    g = LIMITS["global"]
    assert lines[1].startswith("global: ") and f"max_open_orders={g['max_open_orders']}" in lines[1]
    d = LIMITS["defaults"]
    assert lines[3].split() == ["(defaults)", *(str(d[k]) for k in LIMIT_KEYS)]
    assert lines[4].split() == ["BTCUSDT", *(str(d[k]) + ("*" if k in ("max_order_qty", "max_position_qty") else "")
                                            if k not in ("max_order_qty", "max_position_qty") else
                                            {"max_order_qty": "2*", "max_position_qty": "3*"}[k] for k in LIMIT_KEYS)]
    # no kill_triggers section: every automatic trigger is off
    assert lines[-2].startswith("kill_triggers: daily_loss=off ") and "upstream_services=strategy_engine" in lines[-2]
    assert lines[-1].startswith("changes made while running: unknown")
    assert set(doc["kill_triggers"]) >= {"daily_loss", "reject_streak", "stale_market_data_s"}


def test_cli_risk_show_defaults_to_config_risk_yml(clean_env, capsys):
    rc, out, _ = run_cli(capsys, "risk", "show", "--json")
    assert rc == 0
    assert json.loads(out)["defaults"] == yaml.safe_load((ROOT / "config" / "risk.yml").read_text())["defaults"]


def test_cli_risk_show_names_the_bad_key_in_one_line(clean_env, capsys, tmp_path):
    f = tmp_path / "risk.yml"
    f.write_text(yaml.safe_dump({"defaults": {**LIMITS["defaults"], "max_order_qty": "-1"}}))
    clean_env.setenv("AITRADER_EX_RISK_FILE", str(f))
    rc, out, err = run_cli(capsys, "risk", "show")
    assert (rc, out) == (1, "") and err.count("\n") == 1 and "defaults.max_order_qty" in err


def test_cli_kill_with_redis_down_reads_the_state_from_the_database_or_fails_in_one_line(env, capsys, db_url):
    from execution.store import Store

    eng = make_engine(db_url)
    Store(eng).ensure_trading_state({"scope": "global", "state": "HALTED", "reason": "drill", "actor": "cli:ops",
                                     "changed_at": 1})
    eng.dispose()
    env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    rc, out, _ = run_cli(capsys, "kill", "status", "--json", "--timeout", "1")
    doc = json.loads(out)
    assert rc == 0 and (doc["state"], doc["reason"]) == ("HALTED", "drill") and "database" in doc["source"]
    rc, out, err = run_cli(capsys, "kill", "engage", "--reason", "x", "--timeout", "1")
    assert (rc, out) == (1, "") and err.count("\n") == 1 and "is the pipeline running?" in err
