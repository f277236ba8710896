"""The command line: run(argv) in process, and ``python -m tick_replay`` as a real process."""

from __future__ import annotations

import json
import subprocess
import sys

import redis

from common.streams import ticks_stream
from tick_replay import run

from .conftest import utc_ns


def test_synthetic_default_source_json_summary(redis_url, clean_env, capsys):
    rc = run(["--synthetic-ticks", "3000", "--symbols", "3", "--shards", "2", "--json", "--no-progress",
              "--redis-url", redis_url])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ticks"] == 3000 and out["speed"] == "max" and out["shards"] == 2
    assert set(out["per_symbol"]) == {"SYNA", "SYNB", "SYNC"}
    r = redis.Redis.from_url(redis_url)
    try:
        assert sum(r.xlen(ticks_stream(s)) for s in range(2)) == out["entries"]
    finally:
        r.close()


def test_settings_from_environment_are_defaults(redis_url, clean_env, capsys):
    clean_env.setenv("AITRADER_REPLAY_BATCH_MAX", "10")
    clean_env.setenv("AITRADER_REPLAY_SYNTHETIC_TICKS", "95")
    clean_env.setenv("REDIS_URL", redis_url)
    assert run(["--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["ticks"], out["entries"], out["batch_max"]) == (95, 10, 10)


def test_bad_setting_and_unknown_file_exit_2_naming_them(clean_env, tmp_path, capsys):
    clean_env.setenv("AITRADER_REPLAY_SPEED", "fast")
    assert run(["--dry-run"]) == 2
    assert "AITRADER_REPLAY_SPEED" in capsys.readouterr().err
    clean_env.delenv("AITRADER_REPLAY_SPEED")
    junk = tmp_path / "mystery.dat"
    junk.write_text("hello\n")
    assert run([str(junk), "--dry-run"]) == 2
    assert "mystery.dat" in capsys.readouterr().err


def test_dry_run_reads_real_file_without_redis(shared_data, clean_env, capsys):
    f = shared_data / "nautilus_trader" / "fx_ticks" / "truefx_usdjpy-ticks.csv"
    assert run([str(f), "--dry-run", "--json", "--redis-url", "redis://127.0.0.1:1/0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ticks"] == 988 and out["first_ts_event"] == utc_ns("2013-01-01 22:00:00.295")
    assert out["reader_stats"][0]["skipped"] == {"crossed_or_locked": 1, "unchanged": 11}


def test_unreachable_redis_exits_1(clean_env, capsys):
    assert run(["--synthetic-ticks", "10", "--redis-url", "redis://127.0.0.1:1/0", "--no-progress"]) == 1
    assert "cannot reach Redis" in capsys.readouterr().err


def test_python_dash_m_replays_a_file_paced(redis_url, shared_data, clean_env):
    f = shared_data / "freqtrade" / "binance_ethusdt_public_trades_list.csv"
    # 1,000 trades over 207 s of market time at 1000x: about 0.2 s.
    proc = subprocess.run(
        [sys.executable, "-m", "tick_replay", str(f), "--speed", "1000", "--redis-url", redis_url, "--no-progress"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "published 1,000 ticks" in proc.stdout and "ETHUSDT 1,000" in proc.stdout
    assert "freqtrade_trades" in proc.stdout
