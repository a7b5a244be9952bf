"""Faults a client must survive: a backend that dies mid-stream ends the SSE stream with an error event (no
``[DONE]``) and a log row with status error and the partial usage; a backend answering 5xx is retried and reported."""

from __future__ import annotations

import httpx
import openai
import pytest
from sqlalchemy import create_engine, text

from tests.fixtures.dying_upstream import DyingUpstream


@pytest.fixture(scope="module")
def dying():
    up = DyingUpstream(chunks=3)
    yield up
    up.close()


@pytest.fixture(scope="module")
def gateway(dying, tmp_path_factory):
    from tests.fixtures.gateway_proc import start_gateway

    cfg = {"backends": [{"name": "dying", "kind": "openai", "base_url": dying.url,
                         "price": {"input_per_mtok": 1, "output_per_mtok": 1000}}],
           "routes": [{"name": "dying-route", "backend": "dying", "retries": 2}]}
    g = start_gateway(cfg, tmp_path_factory.mktemp("gw-faults"))
    yield g
    g.stop()


def test_stream_broken_midway_ends_with_sse_error_and_no_done(gateway):
    body = {"model": "dying-route", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", gateway.url + "/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        raw = "".join(r.iter_text())
    assert [f"tok{i} " in raw for i in range(4)] == [True, True, True, False]
    assert "event: error" in raw and "data: [DONE]" not in raw
    eng = create_engine(gateway.db_url)
    httpx.get(gateway.base + "/health/ready")  # give the log writer a moment (it flushes every 50 ms)
    import time

    for _ in range(50):
        with eng.connect() as c:
            row = c.execute(text("select status, completion_tokens, cost_usd, error, response from requests "
                                 "where id=:i"), {"i": rid}).one_or_none()
        if row is not None:
            break
        time.sleep(0.1)
    assert row is not None and row.status == "error"
    assert row.completion_tokens == 3 and row.cost_usd == pytest.approx(3 * 1000 / 1e6)
    assert row.response == "tok0 tok1 tok2 "


def test_openai_client_raises_on_broken_stream(gateway):
    client = openai.OpenAI(base_url=gateway.url, api_key="x", max_retries=0)
    stream = client.chat.completions.create(model="dying-route", messages=[{"role": "user", "content": "hi"}],
                                            stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_upstream_5xx_is_retried_then_502(gateway):
    r = httpx.post(gateway.url + "/chat/completions",
                   json={"model": "dying-route", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_error"
