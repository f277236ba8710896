"""``python -m backend.api``: load the settings, build the app, serve it with uvicorn; exit 2 on a config error.
``--check``: exit 0 when the API answers ``/health`` (what the pipeline script waits for)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from backend.api.app import create_app
from backend.api.config import ApiSettings
from backend.api.observability import configure_logging
from common.config import CommonSettings, ConfigError, load


def check() -> int:
    """``--check``: exit 0 when this machine's API (its settings' host and port) answers ``/health`` with 200."""
    import httpx

    try:
        settings = load(ApiSettings)
    except ConfigError as e:
        print(f"backend.api: configuration error: {e}", file=sys.stderr)
        return 2
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    try:
        ok = httpx.get(f"http://{host}:{settings.port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        ok = False
    return 0 if ok else 1


def _refuse_a_cluster(redis_url: str) -> None:
    """ConfigError when Redis answers as a Redis Cluster node; nothing when it does not answer (the API runs
    without Redis: /status says so)."""
    import redis

    from common.bus import cluster_node

    r = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        why = cluster_node(r.info("cluster"))
    except (redis.RedisError, OSError):
        return
    finally:
        r.close()
    if why:
        raise ConfigError(why)


def main() -> int:
    if "--check" in sys.argv[1:]:
        return check()
    try:
        common = load(CommonSettings)
        logging.basicConfig(level=common.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = load(ApiSettings)
        configure_logging(common.log_level, settings.log_json)
        _refuse_a_cluster(common.redis_url)
        app = create_app(settings, common=common)
    except ConfigError as e:
        print(f"backend.api: configuration error: {e}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=common.log_level.lower(),
                proxy_headers=False, server_header=False, log_config=None,
                access_log=not settings.log_json)  # with JSON logs, the API writes its own access lines
    return 0


if __name__ == "__main__":
    sys.exit(main())
