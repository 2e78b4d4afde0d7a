"""A small client for OpenAI-compatible chat completions (`POST {base_url}/chat/completions`).

`LLMSettings` says where the server is and how hard to push it; `ChatClient` sends requests with
at most `max_concurrency` in flight across all threads, retries what is worth retrying (429, 500,
502, 503, 504, connection errors, timeouts) with exponential backoff and jitter, honoring the
server's `Retry-After`, fails at once with `LLMError` on any other error status, and keeps
running token totals (`client.usage`). `client.map(fn, items)` runs `fn` over items on up to
`max_concurrency` threads and returns the results in input order.

The API key travels only in the `Authorization: Bearer` header: it is never logged, never part
of an error message (a server that echoes it back has it masked) and hidden in reprs.

    settings = LLMSettings(base_url="http://127.0.0.1:8080/v1", model="smollm2-135m-instruct")
    with ChatClient(settings) as client:
        reply = client.chat([{"role": "user", "content": "Name a colour."}], max_tokens=8)
        print(reply.text, client.usage)
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from lm_saes.extras import require

log = logging.getLogger(__name__)

ENV_PREFIX = "LM_SAES_LLM_"
API_KEY_ENV = ENV_PREFIX + "API_KEY"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ERROR_TEXT_CHARS = 300  # how much of a server's error text an LLMError quotes
MASK = "***"

T = TypeVar("T")
R = TypeVar("R")


def _api_key_from_env() -> SecretStr | None:
    value = os.environ.get(API_KEY_ENV, "").strip()
    return SecretStr(value) if value else None


class LLMSettings(BaseModel):
    """Where an OpenAI-compatible chat server is and how the client treats it.

    `from_env()` reads every field from `LM_SAES_LLM_<FIELD>` (`LM_SAES_LLM_BASE_URL`,
    `LM_SAES_LLM_MODEL`, ...); the API key alone defaults from `LM_SAES_LLM_API_KEY` anyway.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(description="API root including its version prefix, e.g. http://127.0.0.1:8080/v1")
    model: str = Field(min_length=1, description="model name sent with each request")
    api_key: SecretStr | None = Field(default_factory=_api_key_from_env, description=f"default: ${API_KEY_ENV}")
    max_concurrency: int = Field(4, ge=1, le=1024, description="requests in flight at most, across threads")
    max_retries: int = Field(5, ge=0, le=100, description="retries after the first attempt")
    backoff_s: float = Field(1.0, ge=0, le=3600, allow_inf_nan=False, description="first backoff; doubles per retry")
    max_backoff_s: float = Field(60.0, ge=0, le=3600, allow_inf_nan=False, description="cap on one wait")
    timeout_s: float = Field(120.0, gt=0, le=3600, allow_inf_nan=False, description="connect and per-read timeout")
    max_tokens: int = Field(256, ge=1, le=1_000_000, description="default completion length cap")
    temperature: float = Field(0.0, ge=0, le=2, allow_inf_nan=False, description="default sampling temperature")

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an http(s) URL such as http://127.0.0.1:8080/v1, not {value[:100]!r}")
        if parts.username or parts.password:
            raise ValueError("credentials do not belong in the URL: set api_key (or $LM_SAES_LLM_API_KEY)")
        if parts.query or parts.fragment:
            raise ValueError("the API root takes no query or fragment")
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        if isinstance(value, str | SecretStr):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            return SecretStr(text.strip()) if text.strip() else None
        return value

    @model_validator(mode="after")
    def _check_backoff(self) -> LLMSettings:
        if self.max_backoff_s < self.backoff_s:
            raise ValueError(f"max_backoff_s ({self.max_backoff_s}) is below backoff_s ({self.backoff_s})")
        return self

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> LLMSettings:
        """Fields from `LM_SAES_LLM_<FIELD>` variables; keyword overrides win over them."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            name: env[ENV_PREFIX + name.upper()] for name in cls.model_fields if ENV_PREFIX + name.upper() in env
        }
        values.update(overrides)
        return cls(**values)


class ChatReply(NamedTuple):
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


class Usage(NamedTuple):
    """Running totals of a client: tokens of answered requests, requests answered, retries made,
    requests that ended in an LLMError."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    retries: int = 0
    failures: int = 0


class LLMError(RuntimeError):
    """A chat request failed: an error status that is not worth retrying, or retries ran out."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.attempts = attempts


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, str | bytes):
        raise TypeError("messages: a list of {'role': ..., 'content': ...} dicts, not a string")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}]: a dict with 'role' and 'content', not {type(message).__name__}")
        if not isinstance(message.get("role"), str) or not message["role"]:
            raise ValueError(f"messages[{i}]: needs a 'role' ('system', 'user' or 'assistant')")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{i}]: needs a string 'content'")
        checked.append(dict(message))
    if not checked:
        raise ValueError("messages: at least one message")
    return checked


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


class ChatClient:
    """Thread-safe chat client; see the module docstring. Use it as a context manager or close() it."""

    def __init__(self, settings: LLMSettings, *, transport: Any = None) -> None:
        httpx = require("httpx", "autointerp", "the LLM chat client")
        self.settings = settings
        self._timeout_errors: tuple[type[Exception], ...] = (httpx.TimeoutException,)
        self._transport_errors: tuple[type[Exception], ...] = (httpx.TransportError,)
        headers = {"Accept": "application/json"}
        self._secret = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        slots = settings.max_concurrency
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s),
            limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots),
            transport=transport,
        )
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._usage = Usage()
        self._random = random.Random()

    def __repr__(self) -> str:
        return f"ChatClient({self.settings.base_url!r}, model={self.settings.model!r})"

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def usage(self) -> Usage:
        with self._lock:
            return self._usage

    def _count(self, **add: int) -> None:
        with self._lock:
            self._usage = self._usage._replace(**{k: getattr(self._usage, k) + v for k, v in add.items()})

    def _mask(self, text: str) -> str:
        return text.replace(self._secret, MASK) if self._secret else text

    def _error_text(self, response: Any) -> str:
        """The server's error message (OpenAI's {"error": {"message"}} when it is that), cut short."""
        text = response.text
        try:
            data = response.json()
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            if isinstance(message, str) and message:
                text = message
        except ValueError:
            pass
        text = self._mask(" ".join(text.split()))
        return text if len(text) <= ERROR_TEXT_CHARS else text[: ERROR_TEXT_CHARS - 3] + "..."

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self.settings.max_backoff_s
        if retry_after is not None:  # never earlier than the server asked, a little later to spread clients
            return min(cap, retry_after * (1 + 0.1 * self._random.random()))
        return min(cap, self.settings.backoff_s * 2.0**attempt) * (0.5 + 0.5 * self._random.random())

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatReply:
        """One chat completion; raises LLMError when it cannot get one."""
        settings = self.settings
        max_tokens = settings.max_tokens if max_tokens is None else max_tokens
        temperature = settings.temperature if temperature is None else temperature
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens: a positive integer, not {max_tokens!r}")
        if not (isinstance(temperature, int | float) and math.isfinite(temperature) and 0 <= temperature <= 2):
            raise ValueError(f"temperature: a number in [0, 2], not {temperature!r}")
        body = {
            "model": settings.model,
            "messages": _check_messages(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": False,
        }
        url = settings.chat_url
        attempts = settings.max_retries + 1
        status: int | None = None
        for attempt in range(attempts):
            retry_after = None
            with self._slots:
                try:
                    response = self._http.post(url, json=body)
                except self._timeout_errors as error:
                    status, problem = None, f"timed out after {settings.timeout_s:g} s ({type(error).__name__})"
                except self._transport_errors as error:
                    status, problem = None, f"connection error ({type(error).__name__}: {self._mask(str(error))})"
                else:
                    status = response.status_code
                    if 200 <= status < 300:
                        return self._reply(response, url)
                    problem = f"HTTP {status}: {self._error_text(response)}"
                    if status not in RETRY_STATUSES:
                        self._count(failures=1)
                        raise LLMError(f"LLM request to {url} failed: {problem}", status=status, url=url)
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt + 1 < attempts:
                wait = self._backoff(attempt, retry_after)
                log.warning(
                    "LLM request to %s: %s; retry %d of %d in %.1f s", url, problem, attempt + 1, attempts - 1, wait
                )
                self._count(retries=1)
                time.sleep(wait)
        self._count(failures=1)
        raise LLMError(
            f"LLM request to {url} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {problem}",
            status=status,
            url=url,
            attempts=attempts,
        )

    def _reply(self, response: Any, url: str) -> ChatReply:
        try:
            data = response.json()
            message = data["choices"][0]["message"]
            text = message.get("content") or ""
            usage = data.get("usage") or {}
            reply = ChatReply(
                text=str(text),
                model=str(data.get("model") or self.settings.model),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            self._count(failures=1)
            raise LLMError(
                f"LLM request to {url}: HTTP {response.status_code} but not a chat completion: "
                f"{self._error_text(response)}",
                status=response.status_code,
                url=url,
            ) from None
        self._count(requests=1, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        return reply

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`[fn(item) for item in items]` on up to max_concurrency threads, in input order.

        The first exception (in input order) is raised once the calls already running finish;
        calls not yet started are cancelled.
        """
        todo = list(items)
        if not todo:
            return []
        workers = min(self.settings.max_concurrency, len(todo))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
            futures = [pool.submit(fn, item) for item in todo]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


__all__ = ["ChatClient", "ChatReply", "LLMError", "LLMSettings", "Usage", "parse_retry_after"]
