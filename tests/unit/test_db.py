"""Database models and migrations: upgrade / downgrade on SQLite and PostgreSQL, models == migrations."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from common import db

TABLES = {"orders", "fills", "trading_state", "kill_switch_events", "audit_log", "outbox", "control_requests",
          "risk_overrides", "gateway_state", "users", "refresh_tokens", "models",
          "strategy_switches", "broker_tokens", "jobs", "suggestions", "backtests"}


def tables(url: str) -> set[str]:
    eng = db.make_engine(url)
    try:
        return set(sa.inspect(eng).get_table_names()) - {"alembic_version"}
    finally:
        eng.dispose()


def diffs(url: str) -> list:
    eng = db.make_engine(url)
    try:
        with eng.connect() as c:
            return compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), db.Base.metadata)
    finally:
        eng.dispose()


def _cycle(url: str) -> None:
    db.migrate(url)
    assert tables(url) == TABLES
    db.downgrade(url, "base")
    assert tables(url) == set()
    db.migrate(url)
    assert tables(url) == TABLES


def test_upgrade_downgrade_upgrade_on_sqlite(tmp_path):
    _cycle(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")  # the folder is created


def test_upgrade_downgrade_upgrade_on_the_test_database(database_url):
    _cycle(database_url)


def test_models_and_migrations_agree(database_url):
    db.migrate(database_url)
    assert diffs(database_url) == []


def test_models_and_migrations_agree_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    db.migrate(url)
    assert diffs(url) == []


def test_migrate_works_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'y.db'}"
    db.migrate(url)
    assert tables(url) == TABLES


def test_alembic_command_line_takes_the_url_from_x_or_database_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_") and k != "DATABASE_URL"}
    ini = str(db.ALEMBIC_INI)
    url_x = f"sqlite:///{tmp_path / 'x.db'}"
    subprocess.run([sys.executable, "-m", "alembic", "-c", ini, "-x", f"url={url_x}", "upgrade", "head"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=60)
    assert tables(url_x) == TABLES
    url_env = f"sqlite:///{tmp_path / 'e.db'}"
    subprocess.run([sys.executable, "-m", "alembic", "-c", ini, "upgrade", "head"],
                   cwd=tmp_path, env={**env, "DATABASE_URL": url_env}, check=True, capture_output=True, timeout=60)
    assert tables(url_env) == TABLES
    # neither: the SQLite file under AITRADER_HOME (its folder created)
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "alembic", "-c", ini, "upgrade", "head"],
                   cwd=tmp_path, env={**env, "AITRADER_HOME": str(home)}, check=True, capture_output=True,
                   timeout=60)
    assert tables(f"sqlite:///{home / 'aitrader.db'}") == TABLES


def test_amounts_are_exact_decimals(database_url):
    db.migrate(database_url)
    eng = db.make_engine(database_url)
    big = Decimal("123456789012345678.1234567891") - Decimal(1)  # 18 integer digits, 10 decimals
    try:
        with db.session_factory(eng).begin() as s:
            s.add(db.Order(
                client_order_id="co-1", signal_id="sg", strategy="s", symbol="BAC", side=1, order_type="MARKET",
                tif="DAY", qty=Decimal("0.1"), ref_price=big, limit_price=None, status="ACCEPTED", venue="sim",
                tick_seq=1, ts_event=1, ts_ingest=2, ts_signal=3, ts_intent=4,
            ))
        with db.session_factory(eng)() as s:
            o = s.scalars(sa.select(db.Order)).one()
            assert o.qty == Decimal("0.1") and isinstance(o.qty, Decimal)
            assert o.ref_price == big
            assert o.cum_qty == 0 and o.created_at is not None
        with pytest.raises(sa.exc.StatementError), db.session_factory(eng).begin() as s:
            s.add(db.AuditLog(ts=1, actor="a", action="b", entity="c", entity_id="d"))
            s.add(db.Fill(exec_id="e", venue_trade_id="v", client_order_id="co-1", symbol="BAC", side=1,
                          qty=0.1, price=Decimal(1), fee=Decimal(0), venue="sim", ts_exec=1))  # float refused
    finally:
        eng.dispose()


def test_constraints_hold(database_url):
    db.migrate(database_url)
    eng = db.make_engine(database_url)
    fill = {"exec_id": "e1", "venue_trade_id": "v1", "client_order_id": "nope", "symbol": "BAC", "side": 1,
            "qty": Decimal(1), "price": Decimal(1), "fee": Decimal(0), "liquidity": "taker", "venue": "sim",
            "ts_exec": 1}
    try:
        # a fill needs its order (foreign key to orders.client_order_id)
        with pytest.raises(sa.exc.IntegrityError), eng.begin() as c:
            c.execute(db.Fill.__table__.insert(), fill)
        # state must be ACTIVE / REDUCING / HALTED
        with pytest.raises(sa.exc.IntegrityError), eng.begin() as c:
            c.execute(db.TradingState.__table__.insert(),
                      {"scope": "global", "state": "PAUSED", "reason": "", "actor": "", "changed_at": 1})
    finally:
        eng.dispose()


def test_make_engine_sqlite_pragmas_and_url_normalisation(tmp_path):
    eng = db.make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with eng.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        eng.dispose()
    assert db.normalize_url("postgresql://u@h:5432/d") == "postgresql+psycopg://u@h:5432/d"
    assert db.normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_0006_users_and_refresh_tokens_downgrade_alone(database_url):
    """0006 down removes exactly the API's tables (data elsewhere stays); up again restores them."""
    db.migrate(database_url)
    eng = db.make_engine(database_url)
    try:
        with eng.begin() as c:
            c.execute(db.AuditLog.__table__.insert(), {"ts": 1, "actor": "a", "action": "b", "entity": "c",
                                                       "entity_id": "d"})
            uid = c.execute(db.User.__table__.insert().values(username="ann", role="admin", password_hash="h")
                            ).inserted_primary_key[0]
            c.execute(db.RefreshToken.__table__.insert(), {"jti": "j1", "family_id": "f1", "user_id": uid,
                                                           "issued_at": 1, "expires_at": 2})
    finally:
        eng.dispose()
    db.downgrade(database_url, "0005")
    assert tables(database_url) == TABLES - {"users", "refresh_tokens", "models", "strategy_switches",
                                             "broker_tokens", "jobs", "suggestions", "backtests"}
    db.migrate(database_url)
    assert tables(database_url) == TABLES
    eng = db.make_engine(database_url)
    try:
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM audit_log")).scalar() == 1
            assert c.execute(sa.text("SELECT count(*) FROM users")).scalar() == 0
    finally:
        eng.dispose()


def test_users_constraints_hold(database_url):
    db.migrate(database_url)
    eng = db.make_engine(database_url)
    users = db.User.__table__
    try:
        with eng.begin() as c:
            uid = c.execute(users.insert().values(username="vic", role="viewer", password_hash="h")
                            ).inserted_primary_key[0]
            row = c.execute(sa.select(users.c.disabled, users.c.created_at).where(users.c.id == uid)).one()
            assert row.disabled is False and row.created_at is not None
        with pytest.raises(sa.exc.IntegrityError), eng.begin() as c:  # role outside viewer / trader / admin
            c.execute(users.insert().values(username="root", role="superuser", password_hash="h"))
        with pytest.raises(sa.exc.IntegrityError), eng.begin() as c:  # usernames are unique
            c.execute(users.insert().values(username="vic", role="admin", password_hash="h"))
        with pytest.raises(sa.exc.IntegrityError), eng.begin() as c:  # a refresh token needs its user
            c.execute(db.RefreshToken.__table__.insert(), {"jti": "j", "family_id": "f", "user_id": uid + 100,
                                                           "issued_at": 1, "expires_at": 2})
    finally:
        eng.dispose()


def test_0009_broker_tokens_downgrades_alone(database_url):
    """0009 down removes only broker_tokens; up again restores it."""
    db.migrate(database_url)
    db.downgrade(database_url, "0008")
    assert tables(database_url) == TABLES - {"broker_tokens", "jobs", "suggestions", "backtests"}
    db.migrate(database_url)
    assert tables(database_url) == TABLES


def test_0010_jobs_and_suggestions_downgrade_alone_and_constraints_hold(database_url):
    db.migrate(database_url)
    eng = db.make_engine(database_url)
    try:
        with eng.begin() as c:
            jid = c.execute(db.Job.__table__.insert().values(type="suggestion", status="queued", created_by="a",
                                                             error="")).inserted_primary_key[0]
            c.execute(db.SuggestionRun.__table__.insert().values(
                job_id=jid, prompt="scan", provider="offline", model="rules-v1", context_digest="", summary="",
                attempts=0, created_by="a", suggestions=[{"symbol": "AAA"}]))
        with pytest.raises(sa.exc.IntegrityError), eng.begin() as c:  # status outside the four
            c.execute(db.Job.__table__.insert().values(type="suggestion", status="lost", created_by="a", error=""))
        with pytest.raises(sa.exc.IntegrityError), eng.begin() as c:  # a run needs its job, one run per job
            c.execute(db.SuggestionRun.__table__.insert().values(
                job_id=jid, prompt="again", provider="offline", model="", context_digest="", summary="",
                attempts=0, created_by="a"))
    finally:
        eng.dispose()
    db.downgrade(database_url, "0009")
    assert tables(database_url) == TABLES - {"jobs", "suggestions", "backtests"}
    db.migrate(database_url)
    assert tables(database_url) == TABLES


def test_0011_jobs_lifecycle_and_backtests_round_trip(database_url):
    """0011: a 'done' job becomes 'completed' and keeps its row through down and up; the new statuses and
    columns hold; backtests need a known status and lose only their job link when the job goes."""
    db.migrate(database_url, "0010")
    eng = db.make_engine(database_url)
    try:
        with eng.begin() as c:
            c.execute(sa.text("INSERT INTO jobs (kind, status, created_by, error) VALUES ('suggestion', 'done', 'a', '')"))
        db.migrate(database_url)
        assert tables(database_url) == TABLES
        jobs = db.Job.__table__
        with eng.begin() as c:
            assert c.execute(sa.select(jobs.c.type, jobs.c.status, jobs.c.progress, jobs.c.cancel_requested)).one() \
                == ("suggestion", "completed", 0.0, False)
            jid = c.execute(jobs.insert().values(type="backtest", status="cancelled", created_by="a", error="",
                                                 payload={"files": ["x.csv"]})).inserted_primary_key[0]
            c.execute(jobs.insert().values(type="backtest", status="queued", created_by="a", error="", parent_id=jid))
            c.execute(db.Backtest.__table__.insert().values(job_id=jid, status="completed", files=["x.csv"],
                                                            created_by="a", metrics={"sharpe": 1.5}))
        with pytest.raises(sa.exc.IntegrityError), eng.begin() as c:
            c.execute(db.Backtest.__table__.insert().values(status="done", files=[], created_by="a"))
        db.downgrade(database_url, "0010")
        assert tables(database_url) == TABLES - {"backtests"}
        with eng.connect() as c:
            assert sorted(c.execute(sa.text("SELECT kind, status FROM jobs")).all()) == [
                ("backtest", "failed"), ("backtest", "queued"), ("suggestion", "done")]
        db.migrate(database_url)
        assert tables(database_url) == TABLES
    finally:
        eng.dispose()


def test_0012_deleted_models_fold_into_retired_on_downgrade(database_url):
    db.migrate(database_url)
    eng = db.make_engine(database_url)
    try:
        with eng.begin() as c:
            c.execute(db.Model.__table__.insert().values(
                **{"name": "m", "version": 1, "state": "deleted", "path": "m/1", "onnx_sha256": "0" * 64, "kind": "",
                   "features": [], "metrics": {}, "metadata": {}, "created_by": "a", "reason": ""}))
        db.downgrade(database_url, "0011")
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT state FROM models")).scalar() == "retired"
        db.migrate(database_url)
        with pytest.raises(sa.exc.IntegrityError), eng.begin() as c:
            c.execute(sa.text("UPDATE models SET state = 'lost'"))
    finally:
        eng.dispose()
