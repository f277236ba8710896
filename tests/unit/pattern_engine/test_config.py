"""Service settings (AITRADER_PE_*): shard selection and the pattern file path."""

from __future__ import annotations

import pytest

from common.config import CommonSettings, ConfigError, load
from common.service import main_entry
from pattern_engine.config import PatternEngineSettings
from pattern_engine.pattern_config import DEFAULT_PATH
from pattern_engine.service import PatternEngineService, build


def test_defaults(clean_env):
    s = load(PatternEngineSettings)
    assert (s.shards, s.config) == ("all", DEFAULT_PATH)
    assert s.shard_list(4) == [0, 1, 2, 3]


def test_shard_list_from_env(clean_env):
    clean_env.setenv("AITRADER_PE_SHARDS", " 2, 0 ")
    assert load(PatternEngineSettings).shard_list(3) == [2, 0]


@pytest.mark.parametrize("value", ["x", "1,,2", "1,1", "-1", ""])
def test_bad_shard_syntax_names_the_key(clean_env, value):
    clean_env.setenv("AITRADER_PE_SHARDS", value)
    with pytest.raises(ConfigError, match="AITRADER_PE_SHARDS"):
        load(PatternEngineSettings)


def test_shard_out_of_range_names_the_key(clean_env):
    clean_env.setenv("AITRADER_PE_SHARDS", "0,3")
    with pytest.raises(ConfigError, match="AITRADER_PE_SHARDS: shard 3 out of range"):
        load(PatternEngineSettings).shard_list(2)


def test_service_consumes_the_selected_shards(clean_env, redis_url):
    clean_env.setenv("AITRADER_SHARDS", "4")
    clean_env.setenv("AITRADER_PE_SHARDS", "1,3")
    svc = PatternEngineService(load(CommonSettings, redis_url=redis_url))
    assert list(svc.input_types()) == ["md:ticks:{1}", "md:ticks:{3}"]


def test_bad_pattern_file_makes_the_entry_point_exit_2(clean_env, tmp_path, capsys):
    bad = tmp_path / "p.yml"
    bad.write_text("detectors:\n  momentum:\n    threshold: 0\n")
    clean_env.setenv("AITRADER_PE_CONFIG", str(bad))
    assert main_entry("pattern_engine", build, argv=[]) == 2
    assert "detectors.momentum.threshold" in capsys.readouterr().err
