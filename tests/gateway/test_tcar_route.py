"""gateway/tcar_route.py in process: the caller arrives in the request (``ChatRequest.caller_key_id``), not through
any global, so two callers interleaved on one loop each see their own agents (and the global ones)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

from gateway.backends.base import Backend, ChatRequest, StreamEvent, TokenCounts
from gateway.dispatch import BackendRoute, RouteTable
from gateway.storage.agents import AgentStore
from gateway.storage.db import make_engine, migrate
from gateway.tcar_route import OOS_MESSAGE, TcarBackend
from gateway.usage import Price


class Scripted(Backend):
    """TEST DOUBLE for a router LLM: answers ``reply`` and keeps the prompts it got."""

    def __init__(self, name: str, reply: str):
        super().__init__(name, Price(), frozenset())
        self.reply, self.prompts = reply, []

    async def stream_chat(self, req: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self.prompts.append("\n".join(m["content"] for m in req.messages))
        await asyncio.sleep(0)  # let the other caller's request interleave
        yield StreamEvent(delta={"content": self.reply}, finish_reason="stop", counts=TokenCounts(3, 1))


def _never_embed(texts):  # the router answers "oos": the embedding fallback must not run
    raise AssertionError("embedding fallback used")


def test_each_caller_sees_its_own_agents(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'agents.db'}")
    migrate(engine)
    store = AgentStore(engine)
    store.create("alpha-of-k1", "k1's own agent", "router-llm", "k1")
    store.create("beta-of-k2", "k2's own agent", "router-llm", "k2")
    store.create("gamma-global", "everyone's agent", "router-llm", None)
    router = Scripted("router-llm", "<Reason>nothing fits</Reason><ID>oos</ID>")
    tcar = TcarBackend("tcar", "router-llm", "router-llm", 2, store, _never_embed)
    table = RouteTable({"router-llm": BackendRoute("router-llm", router),
                        "tcar": BackendRoute("tcar", tcar, kind="tcar")}, "tcar")
    tcar.bind(table)

    async def ask(key_id: str | None) -> int:
        res = await tcar.chat(ChatRequest([{"role": "user", "content": "hello"}], caller_key_id=key_id))
        assert res.message["content"] == OOS_MESSAGE and res.decision is not None
        return res.decision["agents_visible"]

    async def run() -> list[int]:
        return list(await asyncio.gather(ask("k1"), ask("k2"), ask(None)))

    assert asyncio.run(run()) == [2, 2, 1]
    assert len(router.prompts) == 3 and all("gamma-global" in p for p in router.prompts)
    k1 = next(p for p in router.prompts if "alpha-of-k1" in p)
    k2 = next(p for p in router.prompts if "beta-of-k2" in p)
    assert "beta-of-k2" not in k1 and "alpha-of-k1" not in k2
    assert any("alpha-of-k1" not in p and "beta-of-k2" not in p for p in router.prompts)  # no key: global only
    engine.dispose()
