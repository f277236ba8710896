"""One JSON shape for every error, and a request id on every response.

Every error the API returns — raised on purpose, a validation failure, an unknown path or
method, an unhandled exception — has the body

    {"error": {"code": "...", "message": "...", "request_id": "...", "details": ...}}

and every response carries ``X-Request-ID``: the client's own when it is sane (1-128 of
letters, digits and ``._:-``), otherwise a new one.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.bus import BusUnavailable, refused

__all__ = ["REQUEST_ID_HEADER", "ApiError", "ErrorBody", "RequestIdMiddleware", "error_response",
           "install_error_handlers", "request_id"]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error",
    429: "rate_limited", 500: "internal_error", 502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout",
}


class ApiError(Exception):
    """An error answer: HTTP ``status``, a stable machine ``code``, a human ``message``, optional ``details``."""

    def __init__(self, status: int, message: str, *, code: str | None = None, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers or {}


T = TypeVar("T")


def database_error(e: SQLAlchemyError) -> ApiError:
    """503 naming the database's first error line (never its SQL)."""
    return ApiError(503, f"database error: {str(e).splitlines()[0][:200]}")


def db_call(fn: Callable[[], T]) -> T:
    """``fn()``, a database error as ``database_error``'s 503."""
    try:
        return fn()
    except SQLAlchemyError as e:
        raise database_error(e) from e


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "") or ""


def error_response(status: int, code: str, message: str, rid: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "request_id": rid, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


# The shape, for the OpenAPI document.
ErrorBody = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "request_id"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "request_id": {"type": "string"}, "details": {}},
    }},
}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the input back (it may be a password); only where and what.
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, request_id(request), exc.details, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else _CODES.get(status, "error").replace("_", " ")
        details = None if isinstance(exc.detail, str) else exc.detail
        return error_response(status, _CODES.get(status, "error"), message, request_id(request), details,
                              dict(exc.headers or {}))

    @app.exception_handler(RedisError)
    async def _redis_error(request: Request, exc: RedisError) -> JSONResponse:
        # Redis away, or there and refusing writes for now (full under noeviction, a read-only replica, failing
        # to persist): 503, the client may retry. Any other Redis error is a bug: the 500 shape, logged.
        if refused(exc):
            return error_response(503, "unavailable", f"redis refuses writes: {str(exc)[:200]}", request_id(request),
                                  headers={"Retry-After": "1"})
        if isinstance(exc, BusUnavailable):
            return error_response(503, "unavailable", f"redis unavailable: {str(exc)[:200]}", request_id(request),
                                  headers={"Retry-After": "1"})
        log.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
        return error_response(500, "internal_error", "internal server error", request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body", "query", "path", "header"))
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return error_response(422, "validation_error", message, request_id(request), details)


class RequestIdMiddleware:
    """Gives each request an id (``request.state.request_id``), puts it on the response, and turns
    an exception no handler took into the 500 error shape (logged with its traceback)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (request id %s)", scope.get("method"), scope.get("path"), rid)
            if started:
                raise
            body = json.dumps({"error": {"code": "internal_error", "message": "internal server error",
                                         "request_id": rid, "details": None}}).encode()
            await send_with_id({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
            await send_with_id({"type": "http.response.body", "body": body})
