"""The streamed remote protocol's logic (collab.r2r_remote) without servers: the zoo's trained small and large models
and R2R router, in process, behind a streaming token-id interface (each stream a background decode, tokens spaced
out in time so that streams overlap, get cancelled and are waited for). Whatever the prefire policy and timing, the
answer must be the one the one-call-at-a-time remote path writes (same top-k signals, same router), token for token
and writer for writer; streams must be cancelled when they stop agreeing, and nothing may run after the session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
import torch

from collab.inproc import HFModel
from collab.protocol import IdCompletion, StreamEnd, TokenStep
from collab.r2r import R2RStrategy
from collab.session import Session

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "evals" / "zoo" / "models"
ARTIFACT = ROOT / "collab" / "artifacts" / "r2r-sql.pt"


class StreamingModel:
    """A model that only streams token ids (no logits): greedy decode of an in-process model, ``delay_s`` between
    tokens, counting the streams that were cancelled and those still running."""

    def __init__(self, name: str, model: HFModel, delay_s: float):
        self.name, self.hf, self.delay_s = name, model, delay_s
        self.opened = self.cancelled = self.running = 0

    async def complete_ids(self, ids: list[int], max_tokens: int, *, stop_ids: list[int] | None = None,
                           top_logprobs: int = 0, temperature: float = 0.0, seed: int | None = None) -> IdCompletion:
        steps = [s async for s in self._steps(ids, max_tokens, stop_ids, top_logprobs)]
        return IdCompletion(steps, "stop" if steps and steps[-1].token_id in (stop_ids or []) else "length", len(ids))

    async def stream_ids(self, ids: list[int], max_tokens: int, *, stop_ids: list[int] | None = None,
                         top_logprobs: int = 0, temperature: float = 0.0, seed: int | None = None
                         ) -> AsyncGenerator[TokenStep | StreamEnd, None]:
        self.opened += 1
        self.running += 1
        done = False
        try:
            async for s in self._steps(ids, max_tokens, stop_ids, top_logprobs):
                yield s
            done = True
            yield StreamEnd("length", len(ids), 0)
        finally:
            self.running -= 1
            self.cancelled += not done

    async def _steps(self, ids: list[int], n: int, stop_ids: list[int] | None, k: int):
        out: list[int] = []
        for _ in range(n):
            await asyncio.sleep(self.delay_s)
            lps = torch.log_softmax(self.hf.next_logits(list(ids) + out).float(), -1)
            v, i = torch.topk(lps, k)
            tok = int(i[0])
            out.append(tok)
            yield TokenStep(tok, float(v[0]), [(int(a), float(b)) for a, b in zip(i, v, strict=True)])
            if tok in (stop_ids or []):
                return


@pytest.fixture(scope="module")
def pair() -> tuple[HFModel, HFModel]:
    torch.set_num_threads(1)
    return HFModel("s", ZOO / "small"), HFModel("l", ZOO / "large")


def prompts() -> list[list[int]]:
    from evals import collab_tasks as tasks
    from evals.zoo.tokenizer import encode

    return [encode(e.prompt) for e in tasks.task_examples("sql", "test", 3)]


def run(pair, params: dict, delays: tuple[float, float], max_tokens: int = 40):
    from evals.zoo.tokenizer import END_ID

    async def go():
        small, large = StreamingModel("small", pair[0], delays[0]), StreamingModel("large", pair[1], delays[1])
        outs = []
        for ids in prompts():
            strat = R2RStrategy.from_artifact(ARTIFACT, slm="small", llm="large", **params)
            session = Session([small, large], ids, stop_ids=[END_ID])
            g = await strat.run(session, max_tokens)
            session.close()
            await asyncio.sleep(0.05)  # cancelled streams unwind
            outs.append((g.output, g.provenance, dict(session.scratch.get("stats") or {})))
        return outs, small, large

    return asyncio.run(go())


@pytest.mark.parametrize("prefire", ["never", "near", "always"])
def test_streamed_equals_one_call_at_a_time(pair, prefire: str) -> None:
    want, _, _ = run(pair, {"streamed": False}, (0.0, 0.0))
    got, small, large = run(pair, {"prefire": prefire}, (0.001, 0.004))
    assert [(o, p) for o, p, _ in got] == [(o, p) for o, p, _ in want]
    assert any("large" in p for _, p, _ in want) and any("small" in p for _, p, _ in want)  # both write
    assert small.running == 0 and large.running == 0  # nothing runs after the sessions
    stats = [s for _, _, s in got]
    assert sum(s["draft_streams"] for s in stats) < sum(len(o) for o, _, _ in got)  # a stream covers many tokens
    if prefire == "never":
        assert all(s["large_prefired"] == 0 for s in stats)
    if prefire == "always":
        assert sum(s["large_prefired"] for s in stats) > 0 and large.cancelled > 0


def test_all_large_and_all_small(pair) -> None:
    want_l, _, _ = run(pair, {"tau": 0.0, "streamed": False}, (0.0, 0.0))
    got_l, small, _ = run(pair, {"tau": 0.0}, (0.001, 0.002))
    assert [(o, p) for o, p, _ in got_l] == [(o, p) for o, p, _ in want_l]
    assert all(set(p) == {"large"} for _, p, _ in got_l) and small.opened == 0  # τ = 0: no draft at all
    got_s, _, large = run(pair, {"tau": 1.0}, (0.001, 0.002))
    assert all(set(p) == {"small"} for _, p, _ in got_s) and large.opened == 0
