"""RELIABILITY F1: schemathesis over the API's OpenAPI schema, against the app on a real (migrated) database
and the test Redis db, authenticated as admin so the protected routes are exercised past their role check.

Every operation of the schema gets valid and invalid inputs (``positive`` and ``negative`` modes):
no server error (a 5xx other than the 503 / 504 the control routes document when no gateway runs,
as here), every response's status, content type, headers and body conform to the schema, invalid
input is refused with a 4xx. Deterministic (``derandomize``, no example database) and bounded
(``MAX_EXAMPLES`` per operation).
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = 25
# The routes that wait on the gateway: 504 when none answers within the timeout, 503 when neither Redis nor
# the database can carry the command (docs/api.md); and the broker passthrough, 503 when no broker runs (as
# here). Nowhere else is a 5xx acceptable.
CONTROL_5XX = {("POST", "/kill-switch/engage"): {503, 504}, ("POST", "/kill-switch/release"): {503, 504},
               ("PUT", "/risk"): {503, 504}, ("POST", "/orders/{client_order_id}/cancel"): {503, 504},
               ("POST", "/orders/cancel-all"): {503, 504}, ("POST", "/orders"): {503},
               **{("GET", f"/mcp/{what}"): {503} for what in ("profile", "margins", "holdings", "positions",
                                                              "orders", "trades", "quotes")}}


def no_undocumented_server_error(ctx, response, case) -> bool | None:
    """``not_a_server_error``, but for the control and broker routes' documented 503 / 504."""
    allowed = CONTROL_5XX.get((case.operation.method.upper(), case.operation.path), set())
    if response.status_code in allowed:
        body = response.json()
        assert body["error"]["code"] in ("unavailable", "gateway_timeout"), body
        return True
    return not_a_server_error(ctx, response, case)


CHECKS = [no_undocumented_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]


MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@pytest.fixture
def fuzz_api(make_api):
    # a short control timeout: every accepted kill-switch / risk command waits for it (no gateway here);
    # a generous login limit so fuzzed logins reach the password check
    # and no suggestion-run limit in the way (each run here fails fast: no broker listens)
    return make_api(control_timeout_s=0.02, login_rate_limit=1000, suggest_rate_limit=10_000,
                    order_rate_limit=10_000)


def test_f1_schema_fuzz(fuzz_api):
    # (schemathesis' pytest plugin, from_fixture, does not run under pytest 9: each operation's strategy is
    # driven by hypothesis directly, one run per operation and mode, every failure collected)
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_api.client.app)
    # Unknown query parameters and headers are ignored (HTTP's convention; bodies are strict: unknown fields are
    # 422), so adding one is not invalid input here. The bearer token is ours (admin), not generated: the
    # token negatives are test_api_auth.py's.
    schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
    admin = fuzz_api.login("admin")["access_token"]
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    failures: dict[str, str] = {}
    calls: dict[str, int] = {}
    no_negative: set[str] = set()

    for op in operations:
        for mode in MODES:

            @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case) -> None:
                # logout would end the login the other examples use: it gets a login of its own each time
                token = fuzz_api.login("admin")["access_token"] if case.operation.path == "/auth/logout" else admin
                response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
                key = f"{case.operation.label} {response.status_code}"
                calls[key] = calls.get(key, 0) + 1

            try:
                run()
            except Unsatisfiable:
                if mode is not schemathesis.GenerationMode.NEGATIVE:
                    raise
                no_negative.add(op.label)  # nothing to make invalid (below: only the operations without input)
            except Exception as e:  # noqa: BLE001 - collected, reported below
                failures[f"{op.label} ({mode.value})"] = str(e)[:2000]
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
    paths = fuzz_api.client.get("/openapi.json").json()["paths"]
    without_input = {f"{m.upper()} {p}" for p, item in paths.items() for m, o in item.items()
                     if not o.get("parameters") and "requestBody" not in o}
    assert no_negative == without_input
    # the protected routes were exercised past the role check (a 2xx as admin), not only refused
    ok = {k.rsplit(" ", 1)[0] for k in calls if k.endswith((" 200", " 201"))}
    for label in ("GET /status", "GET /status/latency", "GET /metrics", "GET /orders", "GET /risk", "GET /kill-switch", "GET /auth/me",
                  "POST /suggestions", "GET /suggestions", "GET /jobs"):
        assert label in ok, sorted(calls)
    assert any(k.startswith("POST /kill-switch/engage 504") for k in calls), sorted(calls)


def test_login_with_a_name_no_user_can_have_is_401_not_a_database_error(fuzz_api):
    """Found by the fuzz on PostgreSQL (which refuses NUL in text): such a name was a 503."""
    for name in ("\x00L", "ad\x00min", "\udbbc\udcc9", "a" * 64, "x"):
        body = json.dumps({"username": name, "password": "whatever-pass-1"})  # \u escapes: a lone surrogate too
        r = fuzz_api.client.post("/auth/login", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials", (name, r.text)
