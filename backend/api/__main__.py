"""``python -m backend.api``: load the settings, build the app, serve it with uvicorn; exit 2 on a config error."""

from __future__ import annotations

import logging
import sys

import uvicorn

from backend.api.app import create_app
from backend.api.config import ApiSettings
from backend.api.observability import configure_logging
from common.config import CommonSettings, ConfigError, load


def main() -> int:
    try:
        common = load(CommonSettings)
        logging.basicConfig(level=common.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = load(ApiSettings)
        configure_logging(common.log_level, settings.log_json)
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
