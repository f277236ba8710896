"""One error shape for every error the API gives, a request id on every response, and strict input checks
(bad input is a 4xx in that shape, never a 500)."""

from __future__ import annotations

import re

import pytest
from fastapi import APIRouter

from .conftest import PASSWORDS

SHAPE = {"code", "message", "request_id", "details"}


def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == SHAPE, body
    err = body["error"]
    assert err["code"] == code and err["message"], err
    assert err["request_id"] == r.headers["X-Request-ID"]
    return err


def test_every_kind_of_error_has_the_same_shape(api):
    viewer = api.headers("viewer")
    _error(api.client.get("/nope"), 404, "not_found")
    _error(api.client.get("/orders/123"), 404, "not_found")
    _error(api.client.delete("/orders"), 405, "method_not_allowed")
    _error(api.client.put("/kill-switch/engage", json={}), 405, "method_not_allowed")
    _error(api.client.get("/orders"), 401, "unauthorized")
    _error(api.client.post("/kill-switch/engage", json={"reason": "x"}, headers=viewer), 403, "forbidden")
    err = _error(api.client.get("/orders?limit=0", headers=viewer), 422, "validation_error")
    assert err["message"].startswith("limit:") and err["details"][0]["loc"] == ["query", "limit"]
    _error(api.client.post("/auth/login", content=b"{not json", headers={"Content-Type": "application/json"}),
           422, "validation_error")
    _error(api.client.post("/auth/login", json={"username": "admin", "password": "bad-password-1"}), 401,
           "invalid_credentials")


def test_an_unhandled_exception_is_a_500_in_the_shape_with_the_request_id(make_api):
    api = make_api()
    boom = APIRouter()

    @boom.get("/boom")
    def _boom() -> None:
        raise RuntimeError("secret internals")

    api.client.app.include_router(boom)
    r = api.client.get("/boom", headers={"X-Request-ID": "trace-500"})
    err = _error(r, 500, "internal_error")
    assert err["request_id"] == "trace-500" and "secret internals" not in r.text


def test_redis_away_or_refusing_writes_is_a_503_and_any_other_redis_error_a_500(make_api):
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import OutOfMemoryError, ResponseError

    api = make_api()
    router = APIRouter()
    errors = {"oom": OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
              "misconf": ResponseError("MISCONF Errors writing to the AOF file"),
              "away": RedisConnectionError("Connection refused"),
              "bug": ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")}

    @router.post("/redis/{kind}")
    def _fail(kind: str) -> None:
        raise errors[kind]

    api.client.app.include_router(router)
    for kind, message in (("oom", "redis refuses writes: command not allowed"),
                          ("misconf", "redis refuses writes: MISCONF"), ("away", "redis unavailable: Connection")):
        r = api.client.post(f"/redis/{kind}")
        assert _error(r, 503, "unavailable")["message"].startswith(message), r.text
        assert r.headers["Retry-After"] == "1"
    r = api.client.post("/redis/bug")
    assert _error(r, 500, "internal_error") and "WRONGTYPE" not in r.text


def test_request_id_is_echoed_when_sane_and_generated_otherwise(api):
    r = api.client.get("/health", headers={"X-Request-ID": "abc-123.X:y_z"})
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "abc-123.X:y_z"
    ids = set()
    for bad in (b"", b"has space", b"x" * 129, b"semi;colon", "new\u00e9line".encode()):
        r = api.client.get("/health", headers={"X-Request-ID": bad})
        rid = r.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid), (bad, rid)
        ids.add(rid)
    assert len(ids) == 5  # a fresh one each time
    r = api.client.get("/nope", headers={"X-Request-ID": "mine-404"})
    assert r.headers["X-Request-ID"] == "mine-404" and r.json()["error"]["request_id"] == "mine-404"


def test_validation_errors_never_echo_the_password(api):
    secret = "hunter2-" + "p" * 300  # too long: refused
    r = api.client.post("/auth/login", json={"username": "admin", "password": secret})
    _error(r, 422, "validation_error")
    assert "hunter2" not in r.text


@pytest.mark.parametrize("body", [
    {},  # no reason
    {"reason": ""},
    {"reason": "   "},
    {"reason": "x" * 501},
    {"reason": "line\nbreak"},
    {"reason": "ok", "scope": "everything"},
    {"reason": "ok", "scope": "strategy:"},
    {"reason": "ok", "scope": "symbol:"},
    {"reason": "ok", "scope": "symbol:" + "A" * 60},
    {"reason": "ok", "scope": "symbol:BAD SYM"},
    {"reason": "ok", "scope": "symbol:X\u0000"},
    {"reason": "ok", "scope": 7},
    {"reason": "ok", "action": "explode"},
    {"reason": "ok", "action": "release"},
    {"reason": "ok", "extra": 1},
    {"reason": 5},
    [],
    "text",
])
def test_kill_switch_input_is_validated_strictly(api, body):
    trader = api.headers("trader")
    _error(api.client.post("/kill-switch/engage", json=body, headers=trader), 422, "validation_error")


def test_bad_input_is_4xx_never_500(make_api):
    api = make_api(login_rate_limit=1000)
    admin = api.headers("admin")
    cases = [
        ("GET", "/orders?limit=-1", None), ("GET", "/orders?limit=abc", None), ("GET", "/orders?limit=1001", None),
        ("GET", "/orders?open=maybe", None), ("GET", "/orders?symbol=" + "A" * 65, None),
        ("GET", "/orders?symbol=%00", None), ("GET", "/orders?strategy=a%20b", None),
        ("GET", "/fills?limit=99999999999999999999999", None), ("GET", "/fills?symbol=;drop", None),
        ("POST", "/kill-switch/release", {"scope": "global"}),
        ("POST", "/kill-switch/release", {"scope": "global", "reason": "x", "action": "halt"}),
    ]
    for method, path, body in cases:
        r = api.client.request(method, path, json=body, headers=admin)
        _error(r, 422, "validation_error")
    logins = [{"username": "", "password": "x"}, {"username": "a" * 65, "password": "x"}, {"username": "admin"},
              {"username": 1, "password": "x"}, {"username": "admin", "password": PASSWORDS["admin"], "x": 1}]
    for body in logins:
        _error(api.client.post("/auth/login", json=body), 422, "validation_error")
    _error(api.client.post("/auth/refresh", json={"refresh_token": "x" * 5000}), 422, "validation_error")
    _error(api.client.post("/auth/refresh", json={}), 422, "validation_error")
    # filters that look like injection are just filters with no match
    r = api.client.get("/orders", params={"symbol": "A'--", "strategy": "s"}, headers=admin)
    assert r.status_code in (200, 422)


def test_cors_allows_only_the_listed_origins(make_api):
    api = make_api(cors_origins="http://localhost:5173,https://ops.example.org")
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    r = api.client.options("/kill-switch/engage", headers={"Origin": "http://localhost:5173", **pre})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "X-Request-ID" in r.headers
    r = api.client.options("/kill-switch/engage", headers={"Origin": "https://evil.example.com", **pre})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = api.client.get("/health", headers={"Origin": "https://evil.example.com"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = api.client.get("/health", headers={"Origin": "https://ops.example.org"})
    assert r.headers["access-control-allow-origin"] == "https://ops.example.org"
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    none = make_api()  # no list: no CORS headers at all
    r = none.client.get("/health", headers={"Origin": "http://localhost:5173"})
    assert "access-control-allow-origin" not in r.headers
