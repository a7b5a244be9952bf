"""A fast OpenAI-compatible upstream stub for benchmarks: raw asyncio HTTP/1.1 (httptools parser, uvloop if present).

It serves, on keep-alive connections:

- ``POST /v1/chat/completions`` (and ``/chat/completions``): non-streaming JSON with ``usage``; with ``"stream": true``
  server-sent events: a role chunk, N content chunks, a usage chunk when ``stream_options.include_usage`` is set, then
  ``data: [DONE]`` (chunked transfer encoding). N is ``--tokens`` (capped by the request's ``max_tokens``).
- ``GET /v1/models``, ``GET /health`` (and ``/health/live``, so a stub can stand in for a gateway in tests).

Answers are built with plain byte formatting so the stub costs a few microseconds per request and is never the
bottleneck of what it measures. ``--chunk-delay-ms`` paces streamed chunks like a real model would.

Run: ``python -m bench.upstream_stub --port 0`` prints ``LISTENING http://127.0.0.1:PORT`` once it accepts;
:func:`start_stub` does that in a child process for the benchmarks and the tests.
What it leaves out: tools, logprobs, ``n > 1``, ``/v1/completions``, TLS, auth (any bearer key is accepted),
HTTP pipelining beyond what httptools hands over message by message.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import httptools
import orjson

from bench.loadgen import install_uvloop

REPO_ROOT = Path(__file__).resolve().parent.parent
_JSON_HEADERS = b"Content-Type: application/json\r\n"


def _response(status: int, body: bytes, keep_alive: bool, content_type: bytes = _JSON_HEADERS) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}.get(status, b"Error")
    conn = b"keep-alive" if keep_alive else b"close"
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            content_type,
            b"Content-Length: %d\r\nConnection: %s\r\n\r\n" % (len(body), conn),
            body,
        )
    )


def _error(status: int, message: str, keep_alive: bool) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": status}})
    return _response(status, body, keep_alive)


def _prompt_tokens(messages: Any) -> int:
    """A rough token count (4 characters a token) so that usage is not constant."""
    chars = 0
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                chars += len(m["content"])
    return max(1, chars // 4)


class StubSettings:
    """What the stub answers: tokens per answer, the token text, and the pacing of streamed chunks."""

    def __init__(self, tokens: int = 16, chunk_delay_ms: float = 0.0, token_text: str = "tok ") -> None:
        self.tokens = tokens
        self.chunk_delay_s = chunk_delay_ms / 1000.0
        self.token_text = token_text


def _chat_body(req: dict[str, Any], n_tokens: int, s: StubSettings) -> bytes:
    prompt = _prompt_tokens(req.get("messages"))
    return orjson.dumps(
        {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(req.get("model", "stub")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": s.token_text * n_tokens},
                    "finish_reason": "length" if n_tokens < s.tokens else "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": n_tokens, "total_tokens": prompt + n_tokens},
        }
    )


def _sse_events(req: dict[str, Any], n_tokens: int, s: StubSettings) -> list[bytes]:
    """The SSE events of one streamed answer, each already framed as one HTTP chunk."""
    model = orjson.dumps(str(req.get("model", "stub")))
    created = int(time.time())
    head = b'{"id":"chatcmpl-stub","object":"chat.completion.chunk","created":%d,"model":%s,"choices":' % (
        created,
        model,
    )
    tok = orjson.dumps(s.token_text)
    events = [head + b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}']
    content = head + b'[{"index":0,"delta":{"content":%s},"finish_reason":null}]}' % tok
    events.extend([content] * n_tokens)
    reason = b'"length"' if n_tokens < s.tokens else b'"stop"'
    events.append(head + b'[{"index":0,"delta":{},"finish_reason":%s}]}' % reason)
    opts = req.get("stream_options")
    if isinstance(opts, dict) and opts.get("include_usage"):
        prompt = _prompt_tokens(req.get("messages"))
        usage = b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (
            prompt,
            n_tokens,
            prompt + n_tokens,
        )
        events.append(head + b'[],"usage":%s}' % usage)
    out = []
    for e in events:
        data = b"data: " + e + b"\n\n"
        out.append(b"%x\r\n%s\r\n" % (len(data), data))
    done = b"data: [DONE]\n\n"
    out.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
    return out


_MODELS = orjson.dumps({"object": "list", "data": [{"id": "stub", "object": "model", "created": 0, "owned_by": "bench"}]})
_HEALTH = b'{"status":"ok"}'


class StubProtocol(asyncio.Protocol):
    """One client connection: parse requests with httptools and answer each as soon as it is complete."""

    def __init__(self, settings: StubSettings) -> None:
        self.settings = settings
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_error(400, "malformed HTTP request", False))
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        t = self.transport
        if t is None:
            return
        keep = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if path in (b"/v1/chat/completions", b"/chat/completions"):
            if method != b"POST":
                t.write(_error(405, "use POST", keep))
            else:
                self._chat(t, keep)
        elif path in (b"/v1/models", b"/models"):
            t.write(_response(200, _MODELS, keep))
        elif path in (b"/health", b"/health/live", b"/health/ready"):
            t.write(_response(200, _HEALTH, keep))
        else:
            t.write(_error(404, f"no route {path.decode(errors='replace')}", keep))
        if not keep:
            t.close()

    def _chat(self, t: asyncio.Transport, keep: bool) -> None:
        try:
            req = orjson.loads(b"".join(self.body))
        except orjson.JSONDecodeError:
            t.write(_error(400, "body is not JSON", keep))
            return
        if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
            t.write(_error(400, "'messages' must be a list", keep))
            return
        s = self.settings
        max_tokens = req.get("max_completion_tokens") or req.get("max_tokens")
        n_tokens = s.tokens if not isinstance(max_tokens, int) or max_tokens <= 0 else min(s.tokens, max_tokens)
        if not req.get("stream"):
            t.write(_response(200, _chat_body(req, n_tokens, s), keep))
            return
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: %s\r\n\r\n" % (b"keep-alive" if keep else b"close")
        )
        events = _sse_events(req, n_tokens, s)
        if s.chunk_delay_s <= 0:
            t.write(head + b"".join(events))
            return
        t.write(head + events[0])
        loop = asyncio.get_running_loop()
        for i, ev in enumerate(events[1:], start=1):
            loop.call_later(s.chunk_delay_s * i, self._write_if_open, t, ev)

    @staticmethod
    def _write_if_open(t: asyncio.Transport, data: bytes) -> None:
        if not t.is_closing():
            t.write(data)


async def serve(host: str, port: int, settings: StubSettings, ready_file: Any = None) -> None:
    """Listen until cancelled; print ``LISTENING http://HOST:PORT`` to ``ready_file`` (stdout) once bound."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StubProtocol(settings), host, port, backlog=2048, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"LISTENING http://{host}:{bound}", file=ready_file or sys.stdout, flush=True)
    async with server:
        await server.serve_forever()


def start_stub(tokens: int = 16, chunk_delay_ms: float = 0.0, timeout_s: float = 30.0
               ) -> tuple[subprocess.Popen[str], str]:
    """Start this stub in its own process (and session) on a free port; return the process and its
    ``http://host:port/v1`` URL once it prints ``LISTENING``. Its stderr goes to a temporary file, quoted in the error
    when it does not start (a pipe nobody reads could fill and stall it)."""
    cmd = [sys.executable, "-m", "bench.upstream_stub", "--port", "0", "--tokens", str(tokens),
           "--chunk-delay-ms", str(chunk_delay_ms)]
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("LISTENING "):
                return proc, line.split()[1] + "/v1"
            if not line and proc.poll() is not None:
                break
        proc.kill()
        proc.wait(5)
        err.seek(0)
        raise RuntimeError(f"upstream stub did not start: {err.read()[-3000:]}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--tokens", type=int, default=16, help="content tokens per answer")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between streamed chunks")
    p.add_argument("--no-uvloop", action="store_true")
    a = p.parse_args(argv)
    if not a.no_uvloop:
        install_uvloop()
    try:
        asyncio.run(serve(a.host, a.port, StubSettings(a.tokens, a.chunk_delay_ms)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
