"""The local LLM server (llama.cpp through xllamacpp) on the real SmolLM2-135M-Instruct GGUF,
through ChatClient: completions with token counts, two requests at once, slots big enough for
~3000-token prompts (and longer ones refused), start-up failures that show the server's log, and
stopping."""

import importlib.util
import json
import os
import socket
import time
import urllib.request
from urllib.parse import urlsplit

import pytest

from lm_saes.autointerp.llm import ChatClient, LLMError

needs_server = pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None,
    reason="the local LLM server needs the autointerp extra: pip install -e '.[autointerp]' (make install)",
)
pytestmark = [needs_server]


@pytest.mark.slow
def test_a_chat_completion_of_the_real_model(local_llm):
    with ChatClient(local_llm) as client:
        reply = client.chat(
            [
                {"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            max_tokens=16,
        )
    assert reply.text.strip()
    assert reply.model == local_llm.model == "smollm2-135m-instruct"
    assert reply.prompt_tokens > 10 and 0 < reply.completion_tokens <= 16
    assert client.usage.requests == 1 and client.usage.prompt_tokens == reply.prompt_tokens


@pytest.mark.slow
def test_two_concurrent_requests_both_succeed(local_llm):
    assert local_llm.max_concurrency == 2
    questions = ["Name a fruit.", "Name a colour."]
    with ChatClient(local_llm) as client:
        replies = client.map(lambda q: client.chat([{"role": "user", "content": q}], max_tokens=12), questions)
    assert len(replies) == 2 and all(reply.text.strip() for reply in replies)
    assert all(reply.completion_tokens > 0 for reply in replies)
    assert client.usage.requests == 2 and client.usage.failures == 0


@pytest.mark.slow
def test_each_slot_holds_a_3000_token_prompt_and_its_answer(local_llm_server):
    # a real 3000-token prompt takes 30 s to 2 min on 2 shared cores; the server's own slot table says it fits
    with urllib.request.urlopen(f"{local_llm_server.address}/slots", timeout=10) as response:
        slots = json.loads(response.read())
    assert [slot["n_ctx"] for slot in slots] == [4096, 4096]


@pytest.mark.slow
def test_a_prompt_longer_than_a_slot_is_refused_not_retried(local_llm):
    words = " ".join(f"word{i % 97}" for i in range(1500))  # about 4400 tokens: over the 4096-token slot
    with ChatClient(local_llm.model_copy(update={"max_retries": 3})) as client, pytest.raises(LLMError) as caught:
        client.chat([{"role": "user", "content": words}], max_tokens=4)
    assert caught.value.status == 400 and client.usage.retries == 0


def test_a_server_that_cannot_start_shows_its_log(tmp_path):
    from lm_saes.autointerp.server import LocalLLMServer

    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is no GGUF file")
    with pytest.raises(RuntimeError, match="exited with code 1 before it was ready") as caught:
        LocalLLMServer(model_path=bad, log_path=tmp_path / "server.log").start()
    assert "failed to load model" in str(caught.value)  # llama.cpp's own words, from the log
    with pytest.raises(FileNotFoundError):
        LocalLLMServer(model_path=tmp_path / "missing.gguf").start()


@pytest.mark.slow
def test_a_busy_port_fails_and_stop_ends_the_server(tmp_path):
    from lm_saes.autointerp.server import LocalLLMServer

    with LocalLLMServer(parallel=1, context=512, log_path=tmp_path / "a.log") as server:
        pid, port = server.pid, urlsplit(server.base_url).port
        assert server.startup_s is not None and server.startup_s < server.startup_timeout_s
        with pytest.raises(RuntimeError, match="couldn't bind"):
            LocalLLMServer(port=port, parallel=1, context=512, log_path=tmp_path / "b.log").start()
    assert pid is not None and port is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    time.sleep(0.2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError, match="not started"):
        server.settings()
