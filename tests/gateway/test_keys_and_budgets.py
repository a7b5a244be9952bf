"""Keys, budgets and rate limits end to end: ``tandem keys create``, then the gateway with a real Redis in front of a
real vLLM server. 200 concurrent requests on a key whose budget allows 100: exactly 100 are served, none overspends."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import openai
import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.vllm
PER_TOKEN = 1000 / 1e6  # output price: $0.001 per token; input is free, so a request's cost is exact


@pytest.fixture(scope="module")
def gateway(vllm_server, redis_url, tmp_path_factory):
    from tests.fixtures.gateway_proc import start_gateway

    work = tmp_path_factory.mktemp("gw-keys")
    cfg = {
        "auth": {"require_keys": True},
        "storage": {"redis_url": redis_url, "database_url": f"sqlite:///{work / 'keys.db'}"},
        "backends": [{"name": "tiny-vllm", "kind": "vllm", "base_url": vllm_server.base_url,
                      "model": vllm_server.model, "price": {"input_per_mtok": 0, "output_per_mtok": 1000}}],
    }
    g = start_gateway(cfg, work)
    yield g
    g.stop()


def create_key(gateway, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--db", gateway.db_url, *args],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["key"]


def test_missing_or_bad_key_is_401(gateway):
    body = {"model": "tiny-vllm", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    assert httpx.post(gateway.url + "/chat/completions", json=body).status_code == 401
    r = httpx.post(gateway.url + "/chat/completions", json=body, headers={"authorization": "Bearer tdm-nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_keys_are_hashed_at_rest(gateway):
    key = create_key(gateway, "--name", "hash-check")
    eng = create_engine(gateway.db_url)
    with eng.connect() as c:
        rows = [tuple(r) for r in c.execute(text("select * from api_keys"))]
    assert rows and not any(key in str(v) for r in rows for v in r)


def test_200_concurrent_requests_on_a_budget_for_100(gateway):
    max_tokens = 4
    key = create_key(gateway, "--budget", str(100 * max_tokens * PER_TOKEN))

    async def run():
        client = openai.AsyncOpenAI(base_url=gateway.url, api_key=key, max_retries=0, timeout=300)

        async def one():
            try:
                r = await client.chat.completions.create(
                    model="tiny-vllm", messages=[{"role": "user", "content": "count"}], max_tokens=max_tokens,
                    extra_body={"ignore_eos": True})
                return r.usage.completion_tokens
            except openai.RateLimitError as e:
                assert e.body["code"] == "insufficient_quota"
                assert int(e.response.headers["retry-after"]) >= 1
                return None

        results = await asyncio.gather(*(one() for _ in range(200)))
        await client.close()
        return results

    results = asyncio.run(run())
    served = [r for r in results if r is not None]
    assert len(served) == 100 and set(served) == {max_tokens}
    eng = create_engine(gateway.db_url)
    for _ in range(50):
        with eng.connect() as c:
            total = c.execute(text("select coalesce(sum(cost_usd), 0), count(*) from requests where status='ok' "
                                   "and key_id is not null")).one()
        if total[1] >= 100:
            break
        import time

        time.sleep(0.1)
    assert total[1] == 100
    assert total[0] <= 100 * max_tokens * PER_TOKEN + 1e-9


def test_rpm_limit_is_429_with_retry_after(gateway):
    key = create_key(gateway, "--rpm", "3")
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "tiny-vllm", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    codes = [httpx.post(gateway.url + "/chat/completions", json=body, headers=headers, timeout=60) for _ in range(4)]
    assert [c.status_code for c in codes] == [200, 200, 200, 429]
    assert 1 <= int(codes[-1].headers["retry-after"]) <= 60
    assert codes[-1].json()["error"]["code"] == "rate_limit_exceeded" and codes[-1].json()["error"]["limit"] == "rpm"
