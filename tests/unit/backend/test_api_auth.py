"""API authentication and roles: the endpoint x role matrix (RELIABILITY F2), JWT negatives and refresh-token
rotation (F3), the login rate limit and an unlimited kill path (F4), release refused below admin (B6)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import redis
import sqlalchemy as sa

from backend.api.deps import ANONYMOUS_PATHS
from backend.api.security import encode_token
from common import streams
from common.db import make_engine
from tests.sql import sql_rows

from .conftest import PASSWORDS, ROLES

ENGAGE = {"scope": "global", "action": "halt", "reason": "matrix"}
RELEASE = {"scope": "global", "reason": "matrix"}
# (method, path, body, least role, status for an allowed caller). No gateway runs in unit tests: an allowed
# kill-switch command gets 504 (no answer); tests/integration/test_api_kill_switch.py has the 200s.
MATRIX = [
    ("GET", "/auth/me", None, "viewer", 200),
    ("GET", "/orders", None, "viewer", 200),
    ("GET", "/fills", None, "viewer", 200),
    # no gateway runs here: a manual order is sent but not recorded in time (202); cancels get no answer (504)
    ("POST", "/orders", {"symbol": "AAA", "side": "BUY", "qty": "1", "order_type": "LIMIT", "limit_price": "10"},
     "trader", 202),
    ("POST", "/orders/{client_order_id}/cancel", None, "trader", 504),
    ("POST", "/orders/cancel-all", {}, "trader", 504),
    ("GET", "/positions", None, "viewer", 200),
    ("GET", "/kill-switch", None, "viewer", 200),
    ("POST", "/kill-switch/engage", ENGAGE, "trader", 504),
    ("POST", "/kill-switch/release", RELEASE, "admin", 504),
    ("GET", "/risk", None, "viewer", 200),
    ("PUT", "/risk", {"key": "defaults.max_order_qty", "value": "5", "reason": "matrix"}, "admin", 504),
    ("GET", "/models", None, "viewer", 200),
    ("POST", "/models", None, "admin", 422),  # an upload is multipart: the JSON-less request is incomplete
    # no model is registered here: an allowed caller gets 404 (test_api_models.py has the 200s)
    ("GET", "/models/{name}/{version}", None, "viewer", 404),
    ("POST", "/models/{name}/{version}/promote", {"reason": "matrix"}, "admin", 404),
    ("POST", "/models/{name}/{version}/retire", {"reason": "matrix"}, "admin", 404),
    ("DELETE", "/models/{name}/{version}?reason=matrix", None, "admin", 404),
    # suggestions: advice only, so viewers read them; a run may call a paid LLM, so creating one is trader's.
    # No broker runs here: the run is stored as failed (still 201); test_api_suggestions.py has done ones.
    ("GET", "/suggestions", None, "viewer", 200),
    ("GET", "/suggestions/{run_id}", None, "viewer", 404),
    ("POST", "/suggestions", {"prompt": "matrix"}, "trader", 201),
    # jobs: viewers read them; queueing one is the type's role (suggestion: trader; train: admin, in
    # test_api_jobs.py); no worker runs here, so a queued job stays queued
    ("GET", "/jobs", None, "viewer", 200),
    ("GET", "/jobs/{job_id}", None, "viewer", 404),
    ("POST", "/jobs", {"type": "suggestion", "payload": {"prompt": "matrix"}}, "trader", 202),
    ("POST", "/jobs/{job_id}/cancel", None, "trader", 404),
    # backtests: queued as jobs (no worker here); reading an unknown one is a 404
    ("GET", "/backtests", None, "viewer", 200),
    ("GET", "/backtests/{backtest_id}", None, "viewer", 404),
    ("GET", "/backtests/{backtest_id}/equity", None, "viewer", 404),
    ("GET", "/backtests/{backtest_id}/trades", None, "viewer", 404),
    ("POST", "/backtests", {"synthetic": 1000}, "trader", 202),
    ("POST", "/backtests/sweep", {"base": {"synthetic": 1000}, "grid": {"AITRADER_SE_FEE_BUFFER_BPS": [5, 10]}},
     "trader", 202),
    ("GET", "/signals", None, "viewer", 200),
    # strategies (config/strategies.yml): switching one off stops trading (trader, like a kill-switch engage),
    # switching one on starts it (admin, like a release). No engine runs here: saved, not applied (202).
    ("GET", "/strategies", None, "viewer", 200),
    ("GET", "/strategies/{strategy}", None, "viewer", 200),
    ("POST", "/strategies/{strategy}/enable", {"reason": "matrix"}, "admin", 202),
    ("POST", "/strategies/{strategy}/disable", {"reason": "matrix"}, "trader", 202),
    # the broker account (account data: trader); no broker runs here, so an allowed caller gets 503
    # (test_api_mcp.py has the 200s against the real mock broker)
    *(("GET", f"/mcp/{what}", None, "trader", 503)
      for what in ("profile", "margins", "holdings", "positions", "orders", "trades")),
    ("GET", "/mcp/quotes?symbols=AAA", None, "trader", 503),
    ("GET", "/status", None, "viewer", 200),
    ("GET", "/status/latency", None, "viewer", 200),
    ("GET", "/metrics", None, "viewer", 200),  # anonymous only with AITRADER_API_METRICS_PUBLIC (test_api_status)
    ("POST", "/auth/logout", None, "viewer", 200),  # last: it revokes the caller's login
]
RANK = {r: i for i, r in enumerate(ROLES)}
PATH_PARAMS = {"name": "no_such_model", "version": 1, "run_id": 999999, "client_order_id": "co-none",
               "job_id": 999999, "backtest_id": 999999, "strategy": "momentum_burst"}  # the MATRIX paths' {placeholders}


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(**over) -> dict:
    now = int(time.time())
    return {"sub": "1", "role": "admin", "typ": "access", "fam": "f", "jti": "j", "iat": now, "exp": now + 600,
            **over}


def test_f2_endpoint_role_matrix(api):
    tokens = {role: api.headers(role) for role in ROLES}
    got, want = {}, {}
    for method, path, body, least, ok in MATRIX:
        for who in ("anonymous", *ROLES):
            r = api.client.request(method, path.format(**PATH_PARAMS), json=body, headers=tokens.get(who, {}))
            got[(method, path, who)] = r.status_code
            want[(method, path, who)] = 401 if who == "anonymous" else (ok if RANK[who] >= RANK[least] else 403)
            assert r.headers["content-type"].startswith(
                "text/plain" if path == "/metrics" and r.status_code == 200 else "application/json")
            if r.status_code >= 400:
                assert set(r.json()["error"]) == {"code", "message", "request_id", "details"}
    assert got == want
    # the anonymous routes answer without a token
    assert api.client.get("/health").status_code == 200
    assert api.client.get("/openapi.json").status_code == 200
    assert api.client.get("/docs").status_code == 200
    assert api.client.post("/auth/refresh", json={"refresh_token": "x.y.z"}).status_code == 401


def test_every_route_is_in_the_matrix_or_anonymous(api):
    """A route added without a row in the matrix above (so without its roles checked) fails here."""
    schema = api.client.get("/openapi.json").json()
    in_matrix = {(m, p.split("?")[0].replace("{strategy}", "{name}")) for m, p, *_ in MATRIX}
    anonymous = {("GET", "/health"), ("POST", "/auth/login"), ("POST", "/auth/refresh")}
    ops = {(method.upper(), path): op for path, item in schema["paths"].items() for method, op in item.items()}
    assert set(ops) == in_matrix | anonymous
    for key, op in ops.items():  # the protected ones say so in the schema (the docs' Authorize button)
        assert bool(op.get("security")) == (key not in anonymous), key
    assert {p for _m, p in anonymous} <= ANONYMOUS_PATHS


def test_b6_viewer_and_trader_cannot_release_and_nothing_reaches_the_gateway(api):
    for role in ("viewer", "trader"):
        r = api.client.post("/kill-switch/release", json=RELEASE, headers=api.headers(role))
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden" and "admin" in r.json()["error"]["message"]
    r = redis.Redis.from_url(api.common.redis_url)
    try:
        assert r.xlen(streams.CONTROL) == 0  # refused before any command was sent
    finally:
        r.close()
    assert sql_rows(api.db_url, "SELECT count(*) FROM control_requests") == [(0,)]
    assert sql_rows(api.db_url, "SELECT count(*) FROM audit_log") == [(0,)]


def test_f3_forged_expired_and_malformed_access_tokens_are_401(api):
    good = api.login("admin")["access_token"]
    assert api.client.get("/auth/me", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    uid = jwt.decode(good, options={"verify_signature": False})["sub"]
    fam = jwt.decode(good, options={"verify_signature": False})["fam"]
    secret = api.settings.jwt_secret
    header, payload, sig = good.split(".")
    viewer = api.login("viewer")["access_token"]
    vh, _vp, vs = viewer.split(".")
    vclaims = jwt.decode(viewer, options={"verify_signature": False})
    cases = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "alg none, no dot": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}",
        "wrong algorithm HS512": jwt.encode(_claims(sub=uid, fam=fam), secret, algorithm="HS512"),
        "wrong algorithm HS384": jwt.encode(_claims(sub=uid, fam=fam), secret, algorithm="HS384"),
        "expired": encode_token(secret, sub=uid, role="admin", typ="access", fam=fam, ttl_s=900,
                                now=int(time.time()) - 1000)[0],
        "no exp": jwt.encode({k: v for k, v in _claims(sub=uid, fam=fam).items() if k != "exp"}, secret,
                             algorithm="HS256"),
        "no role": jwt.encode({k: v for k, v in _claims(sub=uid, fam=fam).items() if k != "role"}, secret,
                              algorithm="HS256"),
        "tampered payload (viewer -> admin)": f"{vh}.{_b64({**vclaims, 'role': 'admin'})}.{vs}",
        "tampered signature": f"{header}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}",
        "other secret": jwt.encode(_claims(sub=uid, fam=fam), "another-secret-of-enough-length-0123456789",
                                   algorithm="HS256"),
        "refresh token as access": api.login("admin")["refresh_token"],
        "garbage": "not-a-token",
        "issued in the future": jwt.encode(_claims(sub=uid, fam=fam, iat=int(time.time()) + 3600,
                                                   exp=int(time.time()) + 4000), secret, algorithm="HS256"),
        "sub not a user id": jwt.encode(_claims(sub="admin", fam=fam), secret, algorithm="HS256"),
        "role claim differs from the user's": jwt.encode(
            _claims(sub=str(vclaims["sub"]), fam=vclaims["fam"], role="admin"), secret, algorithm="HS256"),
    }
    for name, token in cases.items():
        r = api.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (name, r.text)
        assert r.json()["error"]["code"] == "unauthorized" and r.headers["WWW-Authenticate"] == "Bearer", name
    for bad in ("Basic YWRtaW46eA==", "Bearer", "", f"Token {good}"):
        assert api.client.get("/auth/me", headers={"Authorization": bad}).status_code == 401, bad


def test_f3_access_tokens_live_at_most_15_minutes(make_api):
    api = make_api()
    pair = api.login("viewer")
    claims = jwt.decode(pair["access_token"], api.settings.jwt_secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 900 == pair["expires_in"] and claims["typ"] == "access"
    short = make_api(access_ttl_s=60)
    claims = jwt.decode(short.login("viewer")["access_token"], short.settings.jwt_secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 60


def test_f3_refresh_rotates_and_a_reused_refresh_token_revokes_its_family(api):
    first = api.login("trader")
    other = api.login("trader")  # a second login: its own family, untouched below
    r = api.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"] and second["role"] == "trader"
    third = api.client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}).json()
    me = api.client.get("/auth/me", headers={"Authorization": f"Bearer {third['access_token']}"})
    assert me.status_code == 200 and me.json()["username"] == "trader"

    # the first refresh token again: someone holds a copy -> the whole family is revoked
    r = api.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "refresh_token_reused"
    assert api.client.post("/auth/refresh", json={"refresh_token": third["refresh_token"]}).status_code == 401
    for pair in (first, second, third):  # the family's access tokens stop working at once
        h = {"Authorization": f"Bearer {pair['access_token']}"}
        assert api.client.get("/auth/me", headers=h).status_code == 401
    # the other login lives on
    h = {"Authorization": f"Bearer {other['access_token']}"}
    assert api.client.get("/auth/me", headers=h).status_code == 200
    assert api.client.post("/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 200
    fam = jwt.decode(first["refresh_token"], options={"verify_signature": False})["fam"]
    rows = sql_rows(api.db_url, f"SELECT used_at IS NOT NULL, revoked_at IS NOT NULL FROM refresh_tokens "
                             f"WHERE family_id = '{fam}'")
    assert len(rows) == 3 and all(revoked for _used, revoked in rows)


def test_refresh_needs_a_refresh_token_of_ours(api):
    pair = api.login("viewer")
    for token in (pair["access_token"], "a.b.c", pair["refresh_token"][:-3] + "xyz"):
        r = api.client.post("/auth/refresh", json={"refresh_token": token})
        assert r.status_code == 401, token
    expired = encode_token(api.settings.jwt_secret, sub="2", role="viewer", typ="refresh", fam="f", ttl_s=60,
                           now=int(time.time()) - 120)[0]
    assert api.client.post("/auth/refresh", json={"refresh_token": expired}).status_code == 401
    unknown = encode_token(api.settings.jwt_secret, sub="2", role="viewer", typ="refresh", fam="f", ttl_s=60)[0]
    r = api.client.post("/auth/refresh", json={"refresh_token": unknown})
    assert r.status_code == 401 and "unknown" in r.json()["error"]["message"]


def test_logout_revokes_the_login(api):
    pair = api.login("viewer")
    h = {"Authorization": f"Bearer {pair['access_token']}"}
    r = api.client.post("/auth/logout", headers=h)
    assert r.status_code == 200 and r.json() == {"revoked": 1}
    assert api.client.get("/auth/me", headers=h).status_code == 401
    assert api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401


def test_login_refuses_wrong_passwords_unknown_and_disabled_users_alike(api):
    bad = [("viewer", "wrong-password-123"), ("nobody", "whatever-pass-1"), ("VIEWER", PASSWORDS["viewer"])]
    for user, pw in bad:
        r = api.client.post("/auth/login", json={"username": user, "password": pw})
        assert r.status_code == 401 and r.json()["error"]["message"] == "invalid username or password"
    pair = api.login("viewer")
    eng = make_engine(api.db_url)
    try:
        with eng.begin() as c:
            c.execute(sa.text("UPDATE users SET disabled = :t WHERE username = 'viewer'"), {"t": True})
    finally:
        eng.dispose()
    r = api.client.post("/auth/login", json={"username": "viewer", "password": PASSWORDS["viewer"]})
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid username or password"
    h = {"Authorization": f"Bearer {pair['access_token']}"}
    assert api.client.get("/auth/me", headers=h).status_code == 401  # a disabled user's tokens stop at once
    assert api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401


def test_a_role_change_invalidates_older_tokens(api):
    pair = api.login("trader")
    eng = make_engine(api.db_url)
    try:
        with eng.begin() as c:
            c.execute(sa.text("UPDATE users SET role = 'viewer' WHERE username = 'trader'"))
    finally:
        eng.dispose()
    h = {"Authorization": f"Bearer {pair['access_token']}"}
    r = api.client.post("/kill-switch/engage", json=ENGAGE, headers=h)
    assert r.status_code == 401 and "role changed" in r.json()["error"]["message"]
    fresh = api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
    assert fresh["role"] == "viewer"  # the refreshed pair carries the current role


def test_f4_login_is_rate_limited_but_the_kill_switch_never_is(make_api):
    api = make_api(login_rate_limit=3, login_rate_window_s=60, control_via="db", control_timeout_s=0.02)
    trader = api.headers("trader")  # one login for trader, before the hammering
    for _ in range(3):
        r = api.client.post("/auth/login", json={"username": "admin", "password": "wrong-password-1"})
        assert r.status_code == 401
    for pw in ("wrong-password-1", PASSWORDS["admin"]):  # limited now, even with the right password
        r = api.client.post("/auth/login", json={"username": "admin", "password": pw})
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        err = r.json()["error"]
        assert err["code"] == "rate_limited" and err["details"]["retry_after_s"] == int(r.headers["Retry-After"])
    assert api.client.post("/auth/login", json={"username": "viewer", "password": PASSWORDS["viewer"]}) \
        .status_code == 200  # another user name from the same client is its own bucket

    n = 40
    codes = [api.client.post("/kill-switch/engage", json={**ENGAGE, "reason": f"hammer {i}"}, headers=trader)
             .status_code for i in range(n)]
    assert codes == [504] * n  # answered every time (no gateway here: 504), never 429
    views = [api.client.get("/kill-switch", headers=trader).status_code for _ in range(n)]
    assert views == [200] * n
    # every attempt audited with its actor; every unanswered database request withdrawn
    audit = sql_rows(api.db_url, "SELECT actor, action, entity_id FROM audit_log ORDER BY id")
    assert audit == [("trader", "api.kill.engage", "global")] * n
    assert sql_rows(api.db_url, "SELECT count(*) FROM control_requests") == [(0,)]


@pytest.mark.parametrize("limit", [1, 2])
def test_login_limit_window_slides(limit):
    from backend.api.ratelimit import SlidingWindowLimiter

    now = [100.0]
    lim = SlidingWindowLimiter(limit, 10, clock=lambda: now[0], max_keys=2)
    assert all(lim.hit("k") == 0 for _ in range(limit))
    assert lim.hit("k") == pytest.approx(10)
    now[0] += 4
    assert lim.hit("k") == pytest.approx(6)
    now[0] += 6
    assert lim.hit("k") == 0  # the first hit left the window
    lim.hit("a")
    lim.hit("b")  # a third key: the least recently hit ("k") is forgotten
    assert "k" not in lim._hits and len(lim._hits) == 2
