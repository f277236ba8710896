"""``LLMProvider``: one chat-completions call, behind one interface; the providers beside it.

``OpenAICompatibleProvider`` speaks the OpenAI chat-completions API (``POST
<base>/chat/completions``), which xAI (Grok), OpenAI and local servers (llama.cpp, vLLM,
Ollama's ``/v1``) all serve. It asks for a JSON answer with ``response_format`` and, when
a server refuses that parameter, asks again without it (and remembers). Errors are named
for the caller's next step: ``LlmUnavailable`` (429, 5xx, timeout, connection: already
retried with backoff, try later), ``LlmRejected`` (another 4xx: key, model or request
wrong; do not retry), ``LlmBadResponse`` (a 200 that is not a chat-completions answer).
The API key goes only into the ``Authorization`` header: it is never logged, never in an
error message (any echo of it is redacted) and not in ``repr``.

The offline provider (``strategy_engine.suggestions.offline``) answers from the context by
rules, without a network.
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from common.config import ConfigError
from strategy_engine.suggestions.config import LlmSettings

__all__ = [
    "PROVIDERS",
    "ChatAnswer",
    "ChatRequest",
    "LLMProvider",
    "LlmBadResponse",
    "LlmError",
    "LlmRejected",
    "LlmUnavailable",
    "OpenAICompatibleProvider",
    "make_provider",
]

log = logging.getLogger(__name__)

PROVIDERS = ("offline", "openai")


class LlmError(Exception):
    """Base of the providers' errors."""


class LlmUnavailable(LlmError):
    """The provider did not answer usefully (429, 5xx, timeout, connection) after the retries; try later."""


class LlmRejected(LlmError):
    """The provider refused the request (a 4xx other than 429): check the key, the model and the URL."""


class LlmBadResponse(LlmError):
    """The provider answered 200 with something that is not a chat-completions answer."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One question: the chat ``messages`` (what a remote model sees), the structured ``context`` they were
    built from and the user's ``prompt`` (what a local rule-based provider reads instead)."""

    messages: list[dict[str, str]]
    context: dict[str, Any]
    prompt: str
    max_suggestions: int = 10


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    text: str
    model: str
    usage: dict[str, Any] = field(default_factory=dict)


class LLMProvider(ABC):
    """Answers one ``ChatRequest`` with text (expected: the JSON of a ``SuggestionSet``)."""

    name: str = ""
    model: str = ""

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatAnswer:
        """The model's answer; raises ``LlmError`` subclasses only."""


def _endpoint(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


class OpenAICompatibleProvider(LLMProvider):
    """An OpenAI-compatible chat-completions server: xAI Grok, OpenAI, or a local one."""

    name = "openai"

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str = "",
        *,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        backoff_max_s: float = 20.0,
        json_mode: bool = True,
        temperature: float = 0.0,
        max_tokens: int = 2000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not url:
            raise ConfigError("invalid setting AITRADER_LLM_URL: required for the openai provider")
        if not model:
            raise ConfigError("invalid setting AITRADER_LLM_MODEL: required for the openai provider")
        self.url = _endpoint(url)
        self.model = model
        self._key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.json_mode = json_mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._sleep = sleep

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatibleProvider({self.url!r}, model={self.model!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                "max_tokens": self.max_tokens}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def _delay(self, retry: int, response: httpx.Response | None) -> float:
        delay = self.backoff_s * (2**retry)
        if response is not None:
            try:
                delay = max(delay, float(response.headers.get("retry-after", "")))
            except ValueError:
                pass
        return min(delay, self.backoff_max_s)

    async def complete(self, request: ChatRequest) -> ChatAnswer:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        retry = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), follow_redirects=False) as http:
            while True:
                response: httpx.Response | None = None
                try:
                    response = await http.post(self.url, json=self._body(request.messages), headers=headers)
                except httpx.TimeoutException:
                    problem = f"no answer within {self.timeout_s:g}s"
                except httpx.TransportError as e:
                    problem = f"{type(e).__name__}: {self._redact(str(e))[:200]}"
                else:
                    code = response.status_code
                    if code < 300:
                        return self._answer(response)
                    text = self._redact(response.text[:500])
                    if code in (400, 422) and self.json_mode and "response_format" in text:
                        log.warning("LLM %s refused response_format; asking without it from now on", self.url)
                        self.json_mode = False
                        continue
                    if code != 429 and code < 500:
                        raise LlmRejected(f"{self.url}: HTTP {code}: {text}")
                    problem = f"HTTP {code}: {text[:200]}"
                if retry >= self.max_retries:
                    raise LlmUnavailable(f"{self.url}: {problem} (after {retry + 1} attempts)")
                delay = self._delay(retry, response)
                log.warning("LLM %s: %s; retry %d/%d in %.2fs", self.url, problem, retry + 1, self.max_retries,
                            delay)
                retry += 1
                await self._sleep(delay)

    def _answer(self, response: httpx.Response) -> ChatAnswer:
        try:
            data = response.json()
        except ValueError as e:
            raise LlmBadResponse(f"{self.url}: the answer is not JSON: {self._redact(response.text[:200])!r}") from e
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise LlmBadResponse(f"{self.url}: no choices[0].message.content in the answer: "
                                 f"{self._redact(json.dumps(data)[:200])}") from e
        if not isinstance(content, str):
            raise LlmBadResponse(f"{self.url}: choices[0].message.content is {type(content).__name__}, not text")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        model = data.get("model") if isinstance(data.get("model"), str) and data.get("model") else self.model
        return ChatAnswer(content, model, usage)


def make_provider(settings: LlmSettings, name: str | None = None) -> LLMProvider:
    """The provider ``name`` (default ``settings.provider``); ``ConfigError`` naming the key when it lacks one."""
    from strategy_engine.suggestions.offline import OfflineProvider

    name = name or settings.provider
    if name == "offline":
        return OfflineProvider()
    if name == "openai":
        return OpenAICompatibleProvider(
            settings.url, settings.model, settings.api_key, timeout_s=settings.timeout_s,
            max_retries=settings.max_retries, backoff_s=settings.backoff_s, backoff_max_s=settings.backoff_max_s,
            json_mode=settings.json_mode, temperature=settings.temperature, max_tokens=settings.max_tokens,
        )
    raise ConfigError(f"invalid setting AITRADER_LLM_PROVIDER: {name!r} is not one of {', '.join(PROVIDERS)}")
