"""Arbitrage: step-level routing between a draft model and a target model.

The draft writes a step (up to a delimiter, default ``"\\n\\n"`` as token ids, or a stop token, or ``max_step_tokens``);
a :class:`StepRouter` predicts the target's advantage on that step from the draft step's features
(:func:`collab.features.step_features`); if ``ŷ ≥ τ`` the target rewrites the step from the same prefix, else the
draft step stands and **no target call is made**. Modes of :class:`ArbitrageStrategy`:

- ``router`` — the above;
- ``rsd`` — reward-guided speculative decoding: keep the draft step if ``prm(prefix_steps, step) ≥ δ``;
- ``oracle`` — both write, the step with the higher ``prm`` score stands (ties → draft);
- ``draft`` / ``target`` — one model only.

``prm`` is a step scorer ``(prefix_steps: list[str], step: str) -> float`` (``collab.protocol.StepScorer``: a task's
step checker, a PRM or a judge route), or a ``collab.protocol.ProcessReward`` that gives one per request, bound once
per session to the decoded prompt (``evals.collab_tasks.SuitePRM`` finds the suite example the prompt asks). Either
needs the session's ``decode``. A name such as ``"suite:units"`` is refused: whoever builds the route resolves it.
Built from a training file (:meth:`ArbitrageStrategy.from_loaded`), the strategy runs the file's router with its
calibrated τ and step delimiter unless the route gives them.

In process, step tokens come from each model's logits through ``logit_kernels.combine``; a remote model writes chunks that
are cut at the delimiter (the cut tokens still count in its usage), or — a streaming one (vLLM) — one stream per step,
closed at the delimiter, so the server stops there. What it leaves out: labels and training
(``collab.labels.arbitrage_labels``, ``evals.collab_train``) and any concrete process reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from collab.artifact import SavedModule
from collab.features import DEFAULT_K, STEP_FEATURES, Signals, signals_from_logits, signals_from_top, step_features
from collab.protocol import ProcessReward, StepScorer
from collab.session import Session
from collab.strategy import CollabStrategy

MODES = ("router", "rsd", "oracle", "draft", "target")


class StepRouter(SavedModule):
    """MLP from step features to the predicted advantage of the target on this step."""

    kind = "arbitrage"

    def __init__(self, n_features: int = STEP_FEATURES, width: int = 32):
        super().__init__()
        self.config = {"n_features": n_features, "width": width}
        self.net = nn.Sequential(nn.Linear(n_features, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                                 nn.Linear(width, 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats).squeeze(-1)

    @torch.no_grad()
    def predict(self, feats: torch.Tensor) -> float:
        return float(self(feats.reshape(1, -1))[0])


@dataclass
class Step:
    """A step one model wrote: its tokens, their signals, and how it ended."""

    model: str
    tokens: list[int]
    signals: list[Signals] = field(default_factory=list)
    ended_at_delimiter: bool = False
    stopped: bool = False  # ended with a stop token (EOS)


def ends_with(seq: Sequence[int], tail: Sequence[int]) -> bool:
    return bool(tail) and len(seq) >= len(tail) and list(seq[-len(tail):]) == list(tail)


Delimiter = Sequence[int] | str


def _ends_step(session: Session, tokens: list[int], delimiter: Delimiter) -> bool:
    if isinstance(delimiter, str):
        return bool(delimiter) and session.decode is not None and session.decode(tokens).endswith(delimiter)
    return ends_with(tokens, delimiter)


async def write_step(session: Session, model: str, max_tokens: int, delimiter: Delimiter, *, k: int = DEFAULT_K,
                     chunk: int = 16) -> Step:
    """``model`` writes one step after the session's current ids (the session itself is not changed). The delimiter
    is token ids, or text matched on the decoded step (needs the session's ``decode``)."""
    step = Step(model, [])
    base = session.ids
    member = session.member(model)
    while len(step.tokens) < max_tokens:
        if member.in_process:
            logits = await session.logits(model, ids=base + step.tokens)
            tok = session.pick([logits], position=len(session.output) + len(step.tokens))
            new = [(tok, signals_from_logits(logits, tok, k))]
        elif member.streams:  # one streamed call for the whole step, closed (cancelled) at its end
            await _stream_step(session, step, base, max_tokens, delimiter, k)
            return step
        else:
            out = await session.complete(model, min(chunk, max_tokens - len(step.tokens)), ids=base + step.tokens,
                                         top_logprobs=k, stop_ids=sorted(session.stop_ids))
            new = [(s.token_id, signals_from_top(s.top, s.token_id, s.logprob, k)) for s in out.steps]
            if not new:
                break
        for tok, sig in new:
            step.tokens.append(tok)
            step.signals.append(sig)
            if tok in session.stop_ids:
                step.stopped = True
                return step
            if _ends_step(session, step.tokens, delimiter):
                step.ended_at_delimiter = True
                return step
            if len(step.tokens) >= max_tokens:
                return step
    return step


async def _stream_step(session: Session, step: Step, base: list[int], max_tokens: int, delimiter: Delimiter,
                       k: int) -> None:
    """:func:`write_step` for a streaming remote model: its tokens as they arrive, the stream closed (the server's
    request cancelled) at the delimiter, a stop token or ``max_tokens``."""
    stream = session.stream(step.model, max_tokens - len(step.tokens), ids=base + step.tokens, top_logprobs=k,
                            stop_ids=sorted(session.stop_ids))
    try:
        async for s in stream:
            step.tokens.append(s.token_id)
            step.signals.append(signals_from_top(s.top, s.token_id, s.logprob, k))
            if s.token_id in session.stop_ids:
                step.stopped = True
                return
            if _ends_step(session, step.tokens, delimiter):
                step.ended_at_delimiter = True
                return
            if len(step.tokens) >= max_tokens:
                return
    finally:
        await stream.aclose()


class ArbitrageStrategy(CollabStrategy):
    """Step-level routing between ``draft`` and ``target`` (see the module docstring for the modes)."""

    name = "arbitrage"

    def __init__(self, draft: str, target: str, *, mode: str = "router", router: StepRouter | None = None,
                 tau: float = 0.0, prm: StepScorer | ProcessReward | None = None, delta: float = 0.5,
                 delimiter: Delimiter = (), max_step_tokens: int = 64, k: int = DEFAULT_K):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(prm, str):
            raise ValueError(f"prm {prm!r} is a name, not a step scorer: resolve 'suite:…' when building the route "
                             "and pass the scorer (a callable or a ProcessReward)")
        if prm is not None and not (isinstance(prm, ProcessReward) or callable(prm)):
            raise TypeError(f"prm must be a step scorer (prefix_steps, step) -> float or a ProcessReward, got "
                            f"{type(prm).__name__}")
        if mode == "router" and router is None:
            raise ValueError("mode 'router' needs a StepRouter")
        if mode in ("rsd", "oracle") and prm is None:
            raise ValueError(f"mode '{mode}' needs a step scorer (prm)")
        self.draft, self.target, self.mode, self.router, self.tau = draft, target, mode, router, tau
        self.prm, self.delta = prm, float(delta)
        self.delimiter: Delimiter = delimiter if isinstance(delimiter, str) else list(delimiter)
        self.max_step_tokens, self.k = int(max_step_tokens), k
        self.tau = float(tau)

    @classmethod
    def load_artifact(cls, path: str | Path) -> tuple[StepRouter, dict[str, Any]]:
        """The step router and the file's metadata (``tandem train arbitrage``)."""
        loaded: tuple[StepRouter, dict[str, Any]] = StepRouter.load(path)
        return loaded

    @classmethod
    def from_loaded(cls, loaded: tuple[StepRouter, dict[str, Any]], **kwargs: Any) -> ArbitrageStrategy:
        """The file's router, calibrated ``tau`` and step ``delimiter`` unless ``kwargs`` give them."""
        router, meta = loaded
        kwargs.setdefault("router", router)
        if meta.get("tau") is not None:
            kwargs.setdefault("tau", float(meta["tau"]))
        if meta.get("delimiter") is not None:
            kwargs.setdefault("delimiter", str(meta["delimiter"]))
        return cls(**kwargs)

    def prepare(self, session: Session) -> None:
        session.member(self.draft)
        session.member(self.target)
        if (self.prm is not None or isinstance(self.delimiter, str)) and session.decode is None:
            raise ValueError("a step scorer or a text delimiter needs the session's decode")
        session.scratch.setdefault("steps", [])
        session.scratch.setdefault("escalations", 0)
        if isinstance(self.prm, ProcessReward) and session.decode is not None:  # bound once, to this prompt
            session.scratch["prm"] = self.prm.scorer(session.decode(session.prompt_ids))
        elif self.prm is not None:
            session.scratch["prm"] = self.prm

    def _score(self, session: Session, step: Step) -> float:
        assert session.decode is not None
        prm: StepScorer = session.scratch["prm"]
        return float(prm(list(session.scratch["steps"]), session.decode(step.tokens)))

    async def advance(self, session: Session, budget: int) -> None:
        n = min(self.max_step_tokens, budget)
        steps_done: list[str] = session.scratch["steps"]
        if self.mode == "target":
            chosen = await write_step(session, self.target, n, self.delimiter, k=self.k)
        else:
            chosen = await write_step(session, self.draft, n, self.delimiter, k=self.k)
            if self.mode != "draft":
                escalate = False
                if self.mode == "router":
                    assert self.router is not None
                    feats = step_features(chosen.signals, step_index=len(steps_done),
                                          ended_at_delimiter=chosen.ended_at_delimiter)
                    escalate = self.router.predict(feats) >= self.tau
                elif self.mode == "rsd":
                    escalate = self._score(session, chosen) < self.delta
                if self.mode == "oracle":
                    other = await write_step(session, self.target, n, self.delimiter, k=self.k)
                    if self._score(session, other) > self._score(session, chosen):
                        chosen = other
                        session.scratch["escalations"] += 1
                elif escalate:
                    session.scratch["escalations"] += 1
                    chosen = await write_step(session, self.target, n, self.delimiter, k=self.k)
        if not chosen.tokens:
            raise RuntimeError(f"model '{chosen.model}' wrote an empty step")
        for tok in chosen.tokens:
            session.append(tok, chosen.model)
            if session.done:
                break
        if session.decode is not None:
            steps_done.append(session.decode(chosen.tokens))
