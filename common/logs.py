"""Log output for every process: text lines, or one JSON object per record (``AITRADER_LOG_JSON``; the API's
``AITRADER_API_LOG_JSON``), so a log shipper can index fields instead of parsing text."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["TEXT_FORMAT", "JsonFormatter", "RedactTokens", "configure_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# LogRecord attributes that are not extras (and uvicorn's color_message: the message with ANSI colours)
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message"}


# A query parameter whose name ends in "token" (token, access_token, refresh_token): its value.
_TOKEN_PARAM = re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE)


class RedactTokens(logging.Filter):
    """Replace the value of every ``...token=`` query parameter in a record by ``<redacted>``.

    Browsers cannot set headers on a WebSocket, so the API's ``/ws`` takes its access token in the
    URL, and uvicorn logs the URL of every WebSocket it accepts or refuses. The record's message is
    rendered once here (its arguments merged into it) so no handler or formatter sees the token again."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "token=" in msg.lower():
            record.msg, record.args = _TOKEN_PARAM.sub(r"\1<redacted>", msg), ()
            if hasattr(record, "color_message"):  # uvicorn's copy of the message for coloured output
                record.color_message = record.msg
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601), level, logger, message, the record's extras,
    and ``exc`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str, log_json: bool, stream: IO[str] | None = None) -> logging.Handler:
    """Route every log record (uvicorn's too) to one handler on ``stream`` (stderr), as JSON lines or text."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactTokens())
    if log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    return handler
