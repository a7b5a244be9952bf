"""The README's first command: ``tandem serve`` with no config serves SmolLM2-135M-Instruct in process, and the
official openai client gets real text back with cost and route headers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.fixtures.gateway_proc import free_port


@pytest.mark.slow
def test_default_serve_answers_with_smollm2(tmp_path):
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "TANDEM_CACHE": os.environ.get("TANDEM_CACHE", os.path.expanduser("~/.cache/tandem"))}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(1200):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(base + "/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        out = (tmp_path / "serve.log").read_text()
        assert f"http://127.0.0.1:{port}/v1" in out and "route smollm2" in out
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=20,
            temperature=0)
        resp = raw.parse()
        assert raw.headers["x-tandem-route"] == "smollm2"
        assert float(raw.headers["x-tandem-cost-usd"]) > 0
        assert "Paris" in resp.choices[0].message.content

        # The zoo models and a collaboration are routes of the embedded default too.
        ids = {m.id for m in client.models.list().data}
        assert {"small", "large", "expert-sql", "expert-units", "r2r-sql", "zoo-router"} <= ids
        routed = client.chat.completions.create(model="zoo-router", max_tokens=20,
                                                messages=[{"role": "user", "content": "convert 3 km to m"}])
        decision = routed.model_extra["tandem"]["decision"]
        assert decision["kind"] == "router" and decision["chosen"] in {"small", "large", "expert-sql", "expert-units"}
        chunks = list(client.chat.completions.create(
            model="r2r-sql", messages=[{"role": "user", "content": "db shop: how many customers?"}], max_tokens=40,
            stream=True, stream_options={"include_usage": True}))
        writers = {c.model_extra["tandem"]["model"] for c in chunks if c.choices and c.model_extra.get("tandem")}
        assert writers and writers <= {"small", "large"}
        assert {u["model"] for u in chunks[-1].model_extra["tandem"]["usage"]} <= {"small", "large"}
    finally:
        proc.terminate()
        proc.wait(20)
