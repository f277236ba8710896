"""The OpenAI-compatible provider against a local stand-in server (real HTTP on 127.0.0.1): the request's shape,
good and malformed answers, 429 then success, 5xx until the retries run out, timeouts, refused requests, the
response_format fallback — and the API key never in a log line, an error or a repr."""

from __future__ import annotations

import json
import logging

import pytest

from common.config import ConfigError
from strategy_engine.suggestions.config import LlmSettings
from strategy_engine.suggestions.llm import (
    ChatRequest,
    LlmBadResponse,
    LlmRejected,
    LlmUnavailable,
    OpenAICompatibleProvider,
    make_provider,
)
from strategy_engine.suggestions.offline import OfflineProvider

from .suggest_kit import KEY, LlmStandIn, Reply, chat_body

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "scan my portfolio"}]
REQUEST = ChatRequest(MESSAGES, {}, "scan my portfolio")


@pytest.fixture
def stand_in():
    with LlmStandIn() as s:
        yield s


@pytest.fixture
def delays():
    return []


def provider(stand_in: LlmStandIn, delays: list[float], url: str | None = None, **kw) -> OpenAICompatibleProvider:
    async def sleep(s: float) -> None:
        delays.append(s)

    kw = {"timeout_s": 2.0, "max_retries": 3, "backoff_s": 0.01, "backoff_max_s": 1.0, **kw}
    return OpenAICompatibleProvider(url or f"{stand_in.base}/v1", "grok-test", KEY, sleep=sleep, **kw)


async def test_request_shape_and_a_good_answer(stand_in, delays):
    stand_in.script.append(Reply(200, chat_body('{"suggestions": []}', model="grok-test-0613")))
    answer = await provider(stand_in, delays).complete(REQUEST)
    assert answer.text == '{"suggestions": []}' and answer.model == "grok-test-0613"
    assert answer.usage["total_tokens"] == 15
    [seen] = stand_in.seen
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body["model"] == "grok-test" and seen.body["messages"] == MESSAGES
    assert seen.body["response_format"] == {"type": "json_object"} and seen.body["temperature"] == 0.0
    assert delays == []


async def test_a_configured_path_is_used_as_is_and_no_key_means_no_authorization(stand_in, delays):
    p = OpenAICompatibleProvider(f"{stand_in.base}/proxy/openai/chat/completions", "local-llama")
    await p.complete(REQUEST)
    assert stand_in.seen[0].path == "/proxy/openai/chat/completions"
    assert "authorization" not in stand_in.seen[0].headers


async def test_429_then_success_honours_retry_after(stand_in, delays):
    stand_in.script.extend([Reply(429, b'{"error": "slow down"}', {"Retry-After": "0.5"}),
                            Reply(200, chat_body("{}"))])
    answer = await provider(stand_in, delays).complete(REQUEST)
    assert answer.text == "{}" and len(stand_in.seen) == 2
    assert delays == [0.5]  # Retry-After (0.5 s) over the first backoff (0.01 s)


async def test_5xx_retries_with_doubling_backoff_then_unavailable(stand_in, delays):
    stand_in.script.extend([Reply(500, b'{"error": "boom"}'), Reply(502, b"bad gateway"),
                            Reply(503, b"{}"), Reply(500, b"{}")])
    with pytest.raises(LlmUnavailable, match=r"HTTP 500.*after 4 attempts"):
        await provider(stand_in, delays).complete(REQUEST)
    assert len(stand_in.seen) == 4 and delays == [0.01, 0.02, 0.04]


async def test_5xx_then_success(stand_in, delays):
    stand_in.script.extend([Reply(503, b"{}"), Reply(200, chat_body('{"ok": 1}'))])
    assert (await provider(stand_in, delays).complete(REQUEST)).text == '{"ok": 1}'


async def test_a_timeout_is_retried_then_unavailable(stand_in, delays):
    stand_in.script.extend([Reply(200, chat_body("{}"), delay_s=0.6), Reply(200, chat_body("{}"), delay_s=0.6)])
    with pytest.raises(LlmUnavailable, match=r"no answer within 0.2s \(after 2 attempts\)"):
        await provider(stand_in, delays, timeout_s=0.2, max_retries=1).complete(REQUEST)
    assert len(stand_in.seen) == 2


async def test_a_refused_connection_is_unavailable(delays):
    with LlmStandIn() as gone:
        base = gone.base
    p = OpenAICompatibleProvider(base, "m", KEY, max_retries=1, backoff_s=0.01)
    with pytest.raises(LlmUnavailable, match="ConnectError"):
        await p.complete(REQUEST)


@pytest.mark.parametrize("body, words", [
    (b"<html>oops</html>", "not JSON"),
    (b'{"choices": []}', r"no choices\[0\]\.message\.content"),
    (b'{"choices": [{"message": {"content": null}}]}', "content is NoneType"),
])
async def test_a_malformed_answer_is_a_bad_response_not_retried(stand_in, delays, body, words):
    stand_in.script.append(Reply(200, body))
    with pytest.raises(LlmBadResponse, match=words):
        await provider(stand_in, delays).complete(REQUEST)
    assert len(stand_in.seen) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refused_request_is_rejected_at_once(stand_in, delays, status):
    stand_in.script.append(Reply(status, b'{"error": {"message": "invalid model or key"}}'))
    with pytest.raises(LlmRejected, match=f"HTTP {status}"):
        await provider(stand_in, delays).complete(REQUEST)
    assert len(stand_in.seen) == 1 and delays == []


async def test_a_server_refusing_response_format_is_asked_again_without_it(stand_in, delays):
    stand_in.script.extend([Reply(400, b'{"error": "unknown parameter: response_format"}'),
                            Reply(200, chat_body("{}"))])
    p = provider(stand_in, delays)
    await p.complete(REQUEST)
    await p.complete(REQUEST)  # remembered
    assert ["response_format" in s.body for s in stand_in.seen] == [True, False, False]


async def test_the_key_is_never_logged_nor_in_errors_nor_repr(stand_in, delays, caplog):
    caplog.set_level(logging.DEBUG)
    echo = json.dumps({"error": f"bad header Authorization: Bearer {KEY}"}).encode()  # a server echoing the key
    stand_in.script.extend([Reply(500, echo), Reply(500, echo), Reply(401, echo)])
    p = provider(stand_in, delays, max_retries=2)
    with pytest.raises(LlmRejected) as e:
        await p.complete(REQUEST)
    assert KEY not in str(e.value) and "***" in str(e.value)
    assert KEY not in caplog.text and "retry 1/2" in caplog.text
    assert KEY not in repr(p) and KEY not in repr(LlmSettings(api_key=KEY))
    stand_in.script.append(Reply(200, echo.replace(b"error", b"nochoices")))
    with pytest.raises(LlmBadResponse) as e:
        await p.complete(REQUEST)
    assert KEY not in str(e.value)


def test_make_provider_by_configuration(clean_env):
    assert isinstance(make_provider(LlmSettings()), OfflineProvider)
    with pytest.raises(ConfigError, match="AITRADER_LLM_URL"):
        make_provider(LlmSettings(), "openai")
    with pytest.raises(ConfigError, match="AITRADER_LLM_MODEL"):
        make_provider(LlmSettings(url="https://api.x.ai/v1"), "openai")
    p = make_provider(LlmSettings(provider="openai", url="https://api.x.ai/v1/", model="grok-4", api_key=KEY))
    assert isinstance(p, OpenAICompatibleProvider) and p.url == "https://api.x.ai/v1/chat/completions"


def test_bad_llm_settings_fail_fast_naming_the_key(clean_env):
    from common.config import load

    clean_env.setenv("AITRADER_LLM_URL", "ftp://x")
    with pytest.raises(ConfigError, match="AITRADER_LLM_URL"):
        load(LlmSettings)
    clean_env.setenv("AITRADER_LLM_URL", "http://127.0.0.1:8080/v1")
    clean_env.setenv("AITRADER_LLM_API_KEY", "changeme")
    with pytest.raises(ConfigError, match="AITRADER_LLM_API_KEY: placeholder"):
        load(LlmSettings)
    clean_env.setenv("AITRADER_LLM_API_KEY", KEY)
    clean_env.setenv("AITRADER_LLM_PROVDER", "openai")
    with pytest.raises(ConfigError, match="AITRADER_LLM_PROVDER"):
        load(LlmSettings)
