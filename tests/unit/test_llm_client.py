"""ChatClient against a real HTTP server (stdlib, in a thread) that answers from a script:
retries and backoff, errors that are not retried, timeouts, the concurrency limit, token totals
and the API key."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from lm_saes.autointerp.llm import ChatClient, ChatReply, LLMError, LLMSettings, Usage, parse_retry_after

KEY = "sk-test-0123456789-secret"
USER = [{"role": "user", "content": "hello"}]


@dataclass
class Answer:
    status: int = 200
    body: dict | str | None = None  # None: a chat completion echoing the last message
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(text: str, prompt_tokens: int = 7, completion_tokens: int = 3) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": 10},
    }


class ScriptedServer:
    """Answers POSTs with the scripted answers in turn (the last one repeats); records requests
    and the most requests it ever had in progress at once."""

    def __init__(self, script: list[Answer] | Callable[[dict], Answer]):
        self.script = script
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    record = {"path": self.path, "headers": dict(self.headers), "body": body, "t": time.monotonic()}
                    outer.requests.append(record)
                    if callable(outer.script):
                        answer = outer.script(body)
                    else:
                        answer = outer.script[min(len(outer.requests), len(outer.script)) - 1]
                try:
                    time.sleep(answer.delay)
                    payload = answer.body if answer.body is not None else completion(body["messages"][-1]["content"])
                    data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout) and closed the connection
                    pass
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.thread.join()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script) -> ScriptedServer:
        server = ScriptedServer(script).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def settings(url: str, **kw) -> LLMSettings:
    kw = {"model": "scripted", "backoff_s": 0.01, "max_backoff_s": 5.0, "timeout_s": 5.0, "api_key": KEY} | kw
    return LLMSettings(base_url=url, **kw)


def test_chat_sends_an_openai_request_and_counts_tokens(serve):
    server = serve([Answer()])
    with ChatClient(settings(server.url, max_tokens=32, temperature=0.5)) as client:
        reply = client.chat(USER)
        other = client.chat(USER, max_tokens=5, temperature=0.0)
    assert reply == ChatReply(text="hello", model="scripted", prompt_tokens=7, completion_tokens=3)
    assert other.text == "hello"
    first, second = server.requests
    assert first["path"] == "/v1/chat/completions"
    assert first["body"] == {
        "model": "scripted",
        "messages": USER,
        "max_tokens": 32,
        "temperature": 0.5,
        "stream": False,
    }
    assert (second["body"]["max_tokens"], second["body"]["temperature"]) == (5, 0.0)
    assert client.usage == Usage(prompt_tokens=14, completion_tokens=6, requests=2, retries=0, failures=0)


def test_429_with_retry_after_is_retried_once_after_the_wait(serve):
    server = serve([Answer(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"}), Answer()])
    with ChatClient(settings(server.url, backoff_s=0.01)) as client:
        reply = client.chat(USER)
    assert reply.text == "hello"
    assert len(server.requests) == 2
    waited = server.requests[1]["t"] - server.requests[0]["t"]
    assert 1.0 <= waited < 2.0, waited  # Retry-After, not the 0.01 s backoff
    assert client.usage == Usage(prompt_tokens=7, completion_tokens=3, requests=1, retries=1, failures=0)


def test_503_every_time_fails_after_max_retries_plus_one_attempts(serve):
    server = serve([Answer(503, {"error": {"message": "overloaded"}})])
    with ChatClient(settings(server.url, max_retries=3)) as client, pytest.raises(LLMError) as caught:
        client.chat(USER)
    assert len(server.requests) == 4
    error = caught.value
    assert (error.status, error.attempts) == (503, 4)
    assert "HTTP 503" in str(error) and "overloaded" in str(error) and "4 attempts" in str(error)
    assert server.url + "/chat/completions" in str(error)
    assert client.usage == Usage(requests=0, retries=3, failures=1)


def test_backoff_grows_exponentially_with_jitter_and_is_capped(serve):
    server = serve([Answer(500, "boom")] * 3 + [Answer()])
    with ChatClient(settings(server.url, backoff_s=0.1, max_backoff_s=0.3)) as client:
        assert client.chat(USER).text == "hello"
        waits = [b["t"] - a["t"] for a, b in zip(server.requests, server.requests[1:], strict=False)]
        assert 0.05 <= waits[0] < 0.5 and 0.1 <= waits[1] < 0.6 and 0.15 <= waits[2] < 0.7, waits  # + round trips
        assert all(0.05 <= client._backoff(0, None) <= 0.1 for _ in range(50))
        assert all(0.15 <= client._backoff(10, None) <= 0.3 for _ in range(50))  # 0.1 * 2**10 capped at 0.3
        assert client._backoff(0, 100.0) == 0.3  # Retry-After is capped by max_backoff_s too
    assert client.usage.retries == 3


def test_400_is_not_retried_and_quotes_the_server(serve):
    long_message = "model 'nope' not found; " + "x" * 1000
    server = serve([Answer(400, {"error": {"message": long_message, "type": "invalid_request_error"}})])
    with ChatClient(settings(server.url, max_retries=5)) as client, pytest.raises(LLMError) as caught:
        client.chat(USER)
    assert len(server.requests) == 1
    text = str(caught.value)
    assert caught.value.status == 400 and "HTTP 400" in text and "model 'nope' not found" in text
    assert len(text) < 500  # the server's text cut to about 300 characters
    assert client.usage == Usage(failures=1)


def test_a_slow_server_times_out_is_retried_then_fails(serve):
    server = serve([Answer(delay=1.0)])
    with ChatClient(settings(server.url, timeout_s=0.2, max_retries=1)) as client, pytest.raises(LLMError) as caught:
        client.chat(USER)
    assert len(server.requests) == 2
    assert "timed out after 0.2 s" in str(caught.value) and "2 attempts" in str(caught.value)
    assert caught.value.status is None
    assert client.usage.retries == 1 and client.usage.failures == 1


def test_connection_errors_are_retried(serve):
    server = serve([Answer()])
    url = server.url
    server.__exit__()  # nothing listens there any more
    with ChatClient(settings(url, max_retries=2)) as client, pytest.raises(LLMError) as caught:
        client.chat(USER)
    assert "connection error" in str(caught.value) and "3 attempts" in str(caught.value)
    assert client.usage.retries == 2


def test_map_keeps_at_most_max_concurrency_in_flight_and_the_input_order(serve):
    server = serve(lambda body: Answer(delay=0.15 if body["messages"][0]["content"] in "0246" else 0.05))
    items = [str(i) for i in range(8)]
    with ChatClient(settings(server.url, max_concurrency=2)) as client:
        replies = client.map(lambda text: client.chat([{"role": "user", "content": text}]), items)
    assert [reply.text for reply in replies] == items
    assert server.max_in_flight == 2  # in parallel, but never more than two at once
    assert client.usage == Usage(prompt_tokens=56, completion_tokens=24, requests=8, retries=0, failures=0)


def test_the_limit_holds_across_threads_outside_map(serve):
    server = serve([Answer(delay=0.1)])
    with ChatClient(settings(server.url, max_concurrency=3)) as client:
        threads = [threading.Thread(target=client.chat, args=(USER,)) for _ in range(9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(server.requests) == 9 and server.max_in_flight == 3
    assert client.usage.requests == 9


def test_map_raises_the_first_error():
    client = ChatClient(settings("http://127.0.0.1:9/v1", max_concurrency=2))

    def fn(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i * i

    assert client.map(fn, range(3)) == [0, 1, 4]
    assert client.map(fn, []) == []
    with pytest.raises(ValueError, match="three"):
        client.map(fn, range(6))


def test_api_key_is_a_bearer_header_and_never_in_errors(serve, monkeypatch):
    server = serve(
        [Answer(), Answer(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}), Answer(503, KEY)]
    )
    with ChatClient(settings(server.url, max_retries=0)) as client:
        client.chat(USER)
        assert server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
        with pytest.raises(LLMError) as unauthorized:
            client.chat(USER)
        with pytest.raises(LLMError) as unavailable:
            client.chat(USER)
        assert KEY not in repr(client)
    for error in (unauthorized.value, unavailable.value):
        assert KEY not in str(error) and KEY not in repr(error) and "***" in str(error)
    assert "HTTP 401" in str(unauthorized.value)
    assert KEY not in repr(client.settings) and KEY not in client.settings.model_dump_json()

    monkeypatch.setenv("LM_SAES_LLM_API_KEY", "from-env")
    assert LLMSettings(base_url=server.url, model="m").api_key.get_secret_value() == "from-env"
    monkeypatch.delenv("LM_SAES_LLM_API_KEY")
    assert LLMSettings(base_url=server.url, model="m").api_key is None
    with ChatClient(LLMSettings(base_url=server.url, model="m", max_retries=0)) as client:
        pytest.raises(LLMError, client.chat, USER)  # the scripted 503
    assert "Authorization" not in server.requests[-1]["headers"]


def test_a_200_that_is_not_a_completion_is_an_error(serve):
    server = serve([Answer(200, "<html>proxy</html>"), Answer(200, {"choices": []})])
    with ChatClient(settings(server.url)) as client:
        for _ in range(2):
            with pytest.raises(LLMError, match="not a chat completion"):
                client.chat(USER)
    assert len(server.requests) == 2 and client.usage.failures == 2


def test_bad_arguments_are_refused_before_sending(serve):
    server = serve([Answer()])
    with ChatClient(settings(server.url)) as client:
        for messages in ("hello", [], [{"role": "user"}], [{"content": "x"}], ["hello"]):
            with pytest.raises((TypeError, ValueError)):
                client.chat(messages)  # type: ignore[arg-type]
        for kw in ({"max_tokens": 0}, {"temperature": math.nan}, {"temperature": 3.0}, {"max_tokens": 1.5}):
            with pytest.raises(ValueError):
                client.chat(USER, **kw)  # type: ignore[arg-type]
    assert server.requests == []


def test_settings_are_validated():
    good = LLMSettings(base_url=" http://127.0.0.1:8080/v1/ ", model="m")
    assert good.base_url == "http://127.0.0.1:8080/v1" and good.chat_url.endswith("/v1/chat/completions")
    bad = [
        {"base_url": "127.0.0.1:8080"},
        {"base_url": "ftp://host/v1"},
        {"base_url": "http://user:pw@host/v1"},
        {"base_url": "http://host/v1?key=1"},
        {"model": ""},
        {"max_concurrency": 0},
        {"max_retries": -1},
        {"backoff_s": math.inf},
        {"backoff_s": 2.0, "max_backoff_s": 1.0},
        {"timeout_s": 0},
        {"timeout_s": math.nan},
        {"temperature": -0.1},
        {"max_tokens": 0},
        {"unknown": 1},
    ]
    for change in bad:
        with pytest.raises(ValidationError):
            LLMSettings(**({"base_url": "http://h/v1", "model": "m"} | change))


def test_settings_from_env():
    env = {
        "LM_SAES_LLM_BASE_URL": "http://127.0.0.1:8080/v1",
        "LM_SAES_LLM_MODEL": "smollm2",
        "LM_SAES_LLM_MAX_CONCURRENCY": "3",
        "LM_SAES_LLM_TIMEOUT_S": "9.5",
    }
    s = LLMSettings.from_env(env, max_retries=1)
    assert (s.base_url, s.model, s.max_concurrency, s.timeout_s, s.max_retries) == (
        "http://127.0.0.1:8080/v1",
        "smollm2",
        3,
        9.5,
        1,
    )
    with pytest.raises(ValidationError):
        LLMSettings.from_env({"LM_SAES_LLM_MODEL": "m"})  # no base URL


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5 and parse_retry_after("-2") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("nan") is None
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == 10.0
