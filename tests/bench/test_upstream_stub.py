"""bench/upstream_stub.py started as the benchmarks start it: it answers chat and health, and a stub that cannot
start says why."""

from __future__ import annotations

import httpx
import pytest

from bench.upstream_stub import start_stub


def test_started_stub_answers_chat_and_health() -> None:
    proc, url = start_stub(tokens=3)
    try:
        assert url.endswith("/v1")
        assert httpx.get(url.removesuffix("/v1") + "/health", timeout=5).status_code == 200
        r = httpx.post(url + "/chat/completions", timeout=5,
                       json={"model": "stub", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        proc.wait(5)


def test_a_stub_that_does_not_start_quotes_its_stderr() -> None:
    with pytest.raises(RuntimeError, match="chunk-delay-ms"):
        start_stub(chunk_delay_ms="soon")  # type: ignore[arg-type]  # argparse rejects it on stderr
