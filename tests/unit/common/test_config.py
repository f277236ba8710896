"""Settings fail fast naming the key; unknown keys and placeholder secrets are refused."""

from __future__ import annotations

import pytest
from pydantic import Field

from common.config import CommonSettings, ConfigError, SettingsBase, load
from pydantic_settings import SettingsConfigDict


class _ApiLike(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="AITRADER_API_", env_file=".env", extra="ignore", frozen=True)
    jwt_secret: str = Field("a-real-secret-value", description="test")


def test_defaults_load(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    s = load(CommonSettings)
    assert s.redis_url.startswith("redis://") and s.shards == 1
    assert s.db_url.startswith("sqlite:///") and s.db_url.endswith("aitrader.db")


@pytest.mark.parametrize(
    "key,value,named",
    [
        ("AITRADER_SHARDS", "zero", "AITRADER_SHARDS"),
        ("AITRADER_SHARDS", "0", "AITRADER_SHARDS"),
        ("REDIS_URL", "http://nope", "REDIS_URL"),
        ("AITRADER_LOG_LEVEL", "LOUD", "AITRADER_LOG_LEVEL"),
        ("AITRADER_INITIAL_CASH", "lots", "AITRADER_INITIAL_CASH"),
        ("AITRADER_INITIAL_CASH", "NaN", "AITRADER_INITIAL_CASH"),
    ],
)
def test_bad_value_names_the_key(clean_env, tmp_path, key, value, named):
    clean_env.chdir(tmp_path)
    clean_env.setenv(key, value)
    with pytest.raises(ConfigError, match=named):
        load(CommonSettings)


def test_unknown_key_in_env_or_dotenv_is_refused(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    clean_env.setenv("AITRADER_SHRADS", "2")
    with pytest.raises(ConfigError, match="AITRADER_SHRADS"):
        load(CommonSettings)
    clean_env.delenv("AITRADER_SHRADS")
    (tmp_path / ".env").write_text("AITRADER_BLOCKMS=3\n")
    with pytest.raises(ConfigError, match="AITRADER_BLOCKMS"):
        load(CommonSettings)


def test_dotenv_values_are_read(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    (tmp_path / ".env").write_text("AITRADER_SHARDS=4\nREDIS_URL=redis://10.0.0.1:6380/2\n")
    s = load(CommonSettings)
    assert s.shards == 4 and s.redis_url == "redis://10.0.0.1:6380/2"


def test_placeholder_secret_refused(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    clean_env.setenv("AITRADER_API_JWT_SECRET", "changeme")
    with pytest.raises(ConfigError, match="AITRADER_API_JWT_SECRET"):
        load(_ApiLike)


@pytest.mark.parametrize("value", ["password", "Change_Me", "<your secret>", "XXXXXXXX", " secret "])
def test_more_placeholder_secrets_refused(clean_env, tmp_path, value):
    clean_env.chdir(tmp_path)
    clean_env.setenv("AITRADER_API_JWT_SECRET", value)
    with pytest.raises(ConfigError, match="AITRADER_API_JWT_SECRET: placeholder secret refused"):
        load(_ApiLike)


def test_real_secret_accepted(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    clean_env.setenv("AITRADER_API_JWT_SECRET", "q8Zr3vN1xk2Lw9TtB4")
    assert load(_ApiLike).jwt_secret == "q8Zr3vN1xk2Lw9TtB4"


def test_settings_are_frozen(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    s = load(CommonSettings)
    with pytest.raises(Exception):
        s.shards = 3  # type: ignore[misc]
