"""Alembic environment: targets ``common.db.Base.metadata``.

The database URL comes from (first wins): ``Config.attributes["url"]`` (``common.db.migrate``),
``-x url=...`` on the command line, ``DATABASE_URL``, then ``CommonSettings.db_url`` (the
SQLite file under ``AITRADER_HOME``, whose folder is created).
"""

from __future__ import annotations

from logging.config import fileConfig

from sqlalchemy import pool

from alembic import context
from common.db import Base, make_engine, normalize_url

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        from common.config import CommonSettings, load

        url = load(CommonSettings).db_url  # DATABASE_URL / AITRADER_DATABASE_URL, else SQLite
    return normalize_url(url)


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
        render_as_batch=_is_sqlite(url),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                compare_type=True,
                # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
                render_as_batch=_is_sqlite(url),
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
