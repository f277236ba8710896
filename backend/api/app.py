"""The API application: ``create_app(settings)`` builds it (database checked, first admin ensured)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from backend.api import live, panel
from backend.api.config import AdminSettings, ApiSettings
from backend.api.deps import ApiContext
from backend.api.errors import REQUEST_ID_HEADER, ErrorBody, RequestIdMiddleware, install_error_handlers
from backend.api.observability import ObservabilityMiddleware, RequestMetrics
from backend.api.ratelimit import SlidingWindowLimiter
from backend.api.routes import (
    auth,
    backtests,
    health,
    jobs,
    kill_switch,
    mcp,
    models,
    orders,
    risk,
    signals,
    status,
    strategies,
    suggestions,
    views,
)
from backend.api.users import ensure_admin
from common.config import CommonSettings, ConfigError, load
from common.db import make_engine

__all__ = ["REQUIRED_TABLES", "create_app"]

log = logging.getLogger(__name__)

REQUIRED_TABLES = ("users", "refresh_tokens", "orders", "fills", "trading_state", "audit_log", "control_requests",
                   "risk_overrides", "models", "jobs", "suggestions", "strategy_switches")


def _check_schema(engine: sa.Engine, url: str) -> None:
    try:
        names = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as e:
        raise ConfigError(f"database unreachable ({url}): {str(e).splitlines()[0]}") from e
    missing = [t for t in REQUIRED_TABLES if t not in names]
    if missing:
        raise ConfigError(f"database not migrated (missing tables {', '.join(missing)}): run scripts/run_migrations.sh")


def create_app(settings: ApiSettings | None = None, *, common: CommonSettings | None = None,
               admin: AdminSettings | None = None) -> FastAPI:
    """The API, ready to serve. Settings not given are loaded from the environment (``ConfigError`` naming
    the key when one is bad or the JWT secret is missing). The database must be migrated; when it holds no
    admin, the one from ``AITRADER_ADMIN_USERNAME`` / ``AITRADER_ADMIN_PASSWORD`` is created."""
    settings = settings if settings is not None else load(ApiSettings)
    common = common if common is not None else load(CommonSettings)
    admin = admin if admin is not None else load(AdminSettings)
    engine = make_engine(common.db_url)
    try:
        _check_schema(engine, sa.engine.make_url(common.db_url).render_as_string(hide_password=True))
        try:
            done = ensure_admin(engine, admin.username, admin.password)
        except ValueError as e:
            raise ConfigError(f"invalid setting {e}") from e
        except sa.exc.SQLAlchemyError as e:
            raise ConfigError(f"database error while checking the first admin: {str(e).splitlines()[0]}") from e
        if done.startswith("no admin"):
            log.warning("first admin: %s; nobody can log in until one is created", done)
        else:
            log.info("first admin: %s", done)
    except Exception:
        engine.dispose()
        raise

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        yield
        app_.state.jobs.queue.close()
        await app_.state.hub.stop()
        engine.dispose()

    app = FastAPI(
        title="AITrader API",
        version="0.1.0",
        description=(
            "Orders, fills, positions and the kill switch of the AITrader pipeline. Log in with "
            "POST /auth/login, then send `Authorization: Bearer <access_token>`. Roles: viewer < trader < admin. "
            f"Every error has the shape `{{\"error\": {{code, message, request_id, details}}}}`; every response "
            f"carries {REQUEST_ID_HEADER}."
        ),
        lifespan=lifespan,
        responses={"default": {"description": "an error", "content": {"application/json": {"schema": ErrorBody}}}},
    )
    app.state.ctx = ApiContext(
        settings=settings, common=common, engine=engine,
        login_limiter=SlidingWindowLimiter(settings.login_rate_limit, settings.login_rate_window_s),
    )
    orders.install(app, app.state.ctx)
    try:
        suggestions.install(app, app.state.ctx)
        jobs.install(app, app.state.ctx)
        mcp.install(app, app.state.ctx)
    except Exception:
        engine.dispose()
        raise
    app.state.hub = live.Hub(app.state.ctx)
    metrics = RequestMetrics()
    app.state.status = status.StatusState(metrics)
    install_error_handlers(app)
    for r in (health.router, auth.router, orders.router, views.router, kill_switch.router, risk.router, models.router,
              suggestions.router, jobs.router, backtests.router, signals.router, strategies.router, mcp.router,
              status.router, status.metrics_router(settings.metrics_public), live.router):
        app.include_router(r)
    built = panel.panel_dir(settings.panel_dir)
    if built is not None:
        panel.install(app, built)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origin_list, allow_credentials=False,
            allow_methods=["GET", "POST", "PUT"], allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, log_json=settings.log_json)
    app.add_middleware(RequestIdMiddleware)  # outermost: every response, CORS preflights and 500s included
    return app
