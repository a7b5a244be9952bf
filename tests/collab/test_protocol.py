"""The declared model capabilities: ``collab.inproc.HFModel`` has them all, a remote-only model none of the optional
ones, and the session picks each transport from them (a blocking logits-only model runs in a worker thread)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import torch

from collab.inproc import HFModel
from collab.protocol import (
    AsyncLogitModel,
    AsyncStatefulModel,
    IdCompletion,
    LogitModel,
    ProcessReward,
    SequenceScorer,
    StatefulModel,
    TokenModel,
)
from collab.session import Member, Session
from collab.single import SingleModel

CAPABILITIES = (LogitModel, StatefulModel, AsyncLogitModel, AsyncStatefulModel, SequenceScorer)


class RemoteOnly:
    name = "remote"

    async def complete_ids(self, ids: list[int], max_tokens: int, **kw: Any) -> IdCompletion:
        raise AssertionError("not called")


class BlockingLogits(RemoteOnly):
    """In process with blocking ``next_logits`` only: the session must call it off the event loop."""

    name = "blocking"

    def __init__(self) -> None:
        self.threads: list[int] = []

    def next_logits(self, ids: list[int]) -> torch.Tensor:
        self.threads.append(threading.get_ident())
        out = torch.zeros(8)
        out[len(ids) % 8] = 1.0
        return out


def test_hf_model_has_every_capability(tiny_model_dir: Path) -> None:
    m = HFModel("m", tiny_model_dir)
    assert isinstance(m, TokenModel)
    for cap in CAPABILITIES:
        assert isinstance(m, cap), cap.__name__
    member = Member("m", m)
    assert member.in_process and member.has_state and member.awaitable


def test_remote_and_blocking_models() -> None:
    remote = RemoteOnly()
    assert isinstance(remote, TokenModel)
    assert not any(isinstance(remote, cap) for cap in CAPABILITIES)
    assert not Member("r", remote).in_process
    blocking = BlockingLogits()
    assert isinstance(blocking, LogitModel)
    assert not any(isinstance(blocking, cap) for cap in CAPABILITIES[1:])
    member = Member("b", blocking)
    assert member.in_process and not member.has_state and not member.awaitable
    session = Session([blocking], [1, 2])
    gen = asyncio.run(SingleModel("blocking").run(session, 3))
    assert gen.output == [2, 3, 4]  # argmax at len(ids) % 8
    assert threading.get_ident() not in blocking.threads  # each call ran in a worker thread


def test_process_reward_is_a_scorer_factory() -> None:
    class Bound:
        def scorer(self, prompt_text: str) -> Any:
            return lambda prefix, step: float(step in prompt_text)

    assert isinstance(Bound(), ProcessReward)
    assert not isinstance(lambda prefix, step: 1.0, ProcessReward)
    assert Bound().scorer("a b")([], "b") == 1.0
