"""The in-process backtest: determinism, the job entry (row, Parquet, progress), sweeps, the CLI, bad config."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from backend.backtest import run_backtest
from backend.backtest.job import run_backtest_job, sweep_payloads
from backend.cli import main as cli_main
from common.config import ConfigError
from common.db import make_engine, migrate


@pytest.fixture
def home(database_url, tmp_path, clean_env):
    migrate(database_url)
    clean_env.setenv("DATABASE_URL", database_url)
    clean_env.setenv("AITRADER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _trades(res):
    return [(r.client_order_id, r.exec_id, r.symbol, int(r.side), r.last_qty, r.last_px, r.fee) for r in res.reports]


def test_the_same_ticks_and_settings_give_the_same_reports_twice(clean_env):
    a = run_backtest(synthetic=8000, symbols=3, seed=5)
    b = run_backtest(synthetic=8000, symbols=3, seed=5)
    assert a.ticks == 8000 and a.fills, "the synthetic market must trade for this to mean anything"
    assert _trades(a) == _trades(b)
    assert a.equity == b.equity
    # a setting the simulator reads changes the fills: the override reaches the live classes
    c = run_backtest(synthetic=8000, symbols=3, seed=5, overrides={"AITRADER_EX_SLIPPAGE_BPS": "20"})
    assert [r.last_px for r in c.fills] != [r.last_px for r in a.fills]


def test_the_job_writes_a_row_parquet_files_and_reports_progress(home, database_url):
    seen: list[tuple[float, str]] = []
    out = run_backtest_job({"synthetic": 6000, "symbols": 2, "seed": 3, "label": "job test"},
                           lambda f, note: seen.append((f, note)))
    assert seen[-1][0] == 1.0 and seen[-1][1] == "6000 ticks of 6000"
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    eng = make_engine(database_url)
    with eng.connect() as c:
        row = c.execute(sa.text("SELECT * FROM backtests WHERE id = :i"), {"i": out["backtest_id"]}).one()
        live_orders = c.execute(sa.text("SELECT count(*) FROM orders")).scalar()
    eng.dispose()
    assert row.status == "completed" and row.label == "job test" and row.ticks == 6000
    assert live_orders == 0  # the live tables are never written
    metrics = json.loads(row.metrics) if isinstance(row.metrics, str) else row.metrics
    assert metrics["fills"] == row.fills == pq.read_table(out["trades_path"]).num_rows
    eq = pq.read_table(out["equity_path"]).to_pydict()
    assert eq["equity"][0] == 1_000_000.0 and eq["equity"][-1] == pytest.approx(metrics["final_equity"])
    assert out["equity_path"].startswith(str(home.resolve() / "backtests" / str(out["backtest_id"])))


def test_a_bad_setting_is_refused_before_anything_runs(home):
    with pytest.raises(ConfigError, match="AITRADER_EX_NO_SUCH"):
        run_backtest_job({"synthetic": 100, "config": {"AITRADER_EX_NO_SUCH": 1}}, lambda f, n: None)
    with pytest.raises(ConfigError, match="AITRADER_EX_FEE_BPS"):
        run_backtest_job({"synthetic": 100, "config": {"AITRADER_EX_FEE_BPS": "-1"}}, lambda f, n: None)
    with pytest.raises(ConfigError, match="files or synthetic"):
        run_backtest_job({"config": {}}, lambda f, n: None)


def test_a_sweep_is_one_payload_per_grid_point():
    base = {"synthetic": 1000, "config": {"AITRADER_EX_FEE_BPS": "1"}, "label": "s"}
    ps = sweep_payloads(base, {"AITRADER_EX_SLIPPAGE_BPS": [0, 2], "AITRADER_EX_SIM_LATENCY_MS": [0, 5, 10]})
    assert len(ps) == 6
    assert {(p["config"]["AITRADER_EX_SLIPPAGE_BPS"], p["config"]["AITRADER_EX_SIM_LATENCY_MS"]) for p in ps} == {
        (s, lat) for s in (0, 2) for lat in (0, 5, 10)}
    assert all(p["config"]["AITRADER_EX_FEE_BPS"] == "1" and p["synthetic"] == 1000 for p in ps)
    assert ps[0]["label"] == "s AITRADER_EX_SIM_LATENCY_MS=0 AITRADER_EX_SLIPPAGE_BPS=0"
    assert sweep_payloads(base, {}) == [base]


def test_the_cli_prints_metrics_as_json(home, tmp_path, capsys):
    cfg = tmp_path / "bt.yml"
    cfg.write_text("AITRADER_EX_FEE_BPS: 2\nAITRADER_BACKTEST_SAMPLE_S: 5\n")
    assert cli_main(["backtest", "--synthetic", "5000", "--symbols", "2", "--config", str(cfg), "--json",
                     "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["ticks"] == 5000 and out["metrics"]["sample_s"] == 5
    cfg.write_text("AITRADER_NOPE: 1\n")
    assert cli_main(["backtest", "--synthetic", "10", "--config", str(cfg)]) == 2
    assert cli_main(["backtest"]) == 2
