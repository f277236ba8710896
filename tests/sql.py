"""One query against a test database by URL, for tests that only read what services wrote."""

from __future__ import annotations

import sqlalchemy as sa

from common.db import make_engine


def sql_rows(database_url: str, sql: str, **params) -> list:
    """The rows of ``sql`` (bound ``params``) on a short-lived engine."""
    eng = make_engine(database_url)
    try:
        with eng.connect() as c:
            return list(c.execute(sa.text(sql), params))
    finally:
        eng.dispose()
