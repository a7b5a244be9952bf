"""R2R (roads to Rome): the small model writes, a router flags the positions where the large model must write instead.

:class:`R2RRouter` scores a position from the small model's :class:`~collab.features.Signals` — sorted top-k
logprobs, entropy (as the signals carry it, or with ``entropy="topk"`` from the top-k logprobs alone, the same in
process and over a server), chosen token's logprob, an embedding of the chosen token, and the last hidden state when
the small model runs in process (zeros otherwise) — and outputs the probability that the large model must write the
position (*divergent*, or wherever the two models differ: ``tandem train r2r --label``).
:class:`R2RStrategy` decodes with it. Where ``p ≥ τ`` the large model supplies the token:

- small model in process: position by position (its logits → greedy or seeded token → router); with both models in
  process, up to ``chunk`` positions run in one worker thread (one thread hop per chunk: with tiny models a hop per
  token cost more than the small model's forward pass);
- small model remote: it drafts a chunk with top-k logprobs, the first flagged position is cut, the large model writes
  one token on the (prefix-cached) prompt, and the loop repeats;
- both remote and streaming (vLLM): the streamed protocol of ``collab.r2r_remote`` (drafts stopped at the first
  flagged token, the large model's stream opened alongside where a flag is likely).

Each ``advance`` appends tokens of one writer only (a flagged position after small-model tokens is left to the next
call, in ``session.scratch``), so a streamed piece — the text of one ``advance`` — belongs to one model.

``τ ≥ 1`` never routes (the router is not even called) and ``τ ≤ 0`` always routes. Built from a training file
(:meth:`R2RStrategy.from_loaded`), the strategy runs the file's router with its calibrated τ unless the route gives
one. What it leaves out: labels and training (``collab.labels``, ``evals.collab_train``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from collab.artifact import SavedModule
from collab.features import DEFAULT_K, FLOOR, Signals, signals_from_logits, signals_from_top, topk_entropy
from collab.r2r_remote import advance_streamed
from collab.remote_plan import PREFIRE_MODES, is_flagged
from collab.session import ModelUsage, Session
from collab.strategy import CollabStrategy

ENTROPY_SOURCES = ("signals", "topk")  # the router's entropy feature: as the signals carry it, or from top-k alone


class R2RRouter(SavedModule):
    """MLP over [top-k logprobs, entropy, token logprob] ⊕ token embedding ⊕ projected hidden state → one logit."""

    kind = "r2r"

    def __init__(self, vocab_size: int, *, k: int = DEFAULT_K, hidden_size: int = 0, width: int = 64,
                 token_dim: int = 16, entropy: str = "signals"):
        super().__init__()
        if entropy not in ENTROPY_SOURCES:
            raise ValueError(f"entropy must be one of {ENTROPY_SOURCES}, got {entropy!r}")
        self.config = {"vocab_size": vocab_size, "k": k, "hidden_size": hidden_size, "width": width,
                       "token_dim": token_dim, "entropy": entropy}
        self.k, self.hidden_size, self.entropy = k, hidden_size, entropy
        self.tok = nn.Embedding(vocab_size, token_dim)
        self.hid = nn.Linear(hidden_size, width) if hidden_size else None
        self.inp = nn.Linear(k + 2 + token_dim, width)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, dense: torch.Tensor, token_ids: torch.Tensor, hidden: torch.Tensor | None = None, *,
                token_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B]`` for ``dense`` ``[B, k+2]``, ``token_ids`` ``[B]``, ``hidden`` ``[B, H]`` or None;
        ``token_emb`` ``[B, token_dim]`` in place of the table's rows (training through a projection of fixed token
        vectors, :func:`evals.collab_train.train_r2r`). Written with the functional ops on the modules' weights (the
        same numbers as calling the modules): the decode loop calls it once per token, where the module calls'
        overhead outweighs the arithmetic."""
        emb = F.embedding(token_ids, self.tok.weight) if token_emb is None else token_emb
        x = F.linear(torch.cat([dense / abs(FLOOR) * 3.0, emb], -1), self.inp.weight, self.inp.bias)
        if self.hid is not None:
            h = hidden if hidden is not None else torch.zeros(dense.shape[0], self.hidden_size)
            x = x + F.linear(h, self.hid.weight, self.hid.bias)
        lin1, lin2 = self.mlp[1], self.mlp[3]
        return F.linear(F.gelu(F.linear(F.gelu(x), lin1.weight, lin1.bias)), lin2.weight, lin2.bias).squeeze(-1)

    def dense(self, signals: Signals) -> torch.Tensor:
        """``[k + 2]``: the signals' :meth:`~collab.features.Signals.dense` features, with the entropy recomputed
        from the top-k logprobs alone (:func:`collab.features.topk_entropy`) where ``entropy="topk"``: then a small
        model in process and one behind a server that returns top-k logprobs give the router the same numbers."""
        dense = signals.dense()[: self.k + 2]
        if self.entropy == "topk":
            dense[self.k] = topk_entropy(signals.top[: self.k].tolist())
        return dense

    def batch(self, signals: list[Signals]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        dense = torch.stack([self.dense(s) for s in signals])
        toks = torch.tensor([s.token_id for s in signals], dtype=torch.long)
        hid = None
        if self.hidden_size:
            hid = torch.stack([s.hidden if s.hidden is not None else torch.zeros(self.hidden_size) for s in signals])
        return dense, toks, hid

    @torch.no_grad()
    def probs(self, signals: list[Signals]) -> list[float]:
        """p(divergent) of many positions in one batch (training's validation, offline scoring)."""
        return torch.sigmoid(self.forward(*self.batch(signals))).tolist()

    @torch.no_grad()
    def prob(self, signals: Signals) -> float:
        """p(divergent) of one position (:meth:`forward` on a batch of one, without stacking a list)."""
        dense = self.dense(signals).reshape(1, -1)
        hidden = signals.hidden.reshape(1, -1) if self.hidden_size and signals.hidden is not None else None
        return float(torch.sigmoid(self.forward(dense, torch.tensor([signals.token_id]), hidden))[0])


PENDING = "r2r_pending"  # session.scratch: the small model's next position is flagged; the large model writes it


class R2RStrategy(CollabStrategy):
    """The small model ``slm`` writes; where the router's p ≥ ``tau`` the large model ``llm`` writes instead."""

    name = "r2r"

    def __init__(self, slm: str, llm: str, *, router: R2RRouter | None = None, tau: float = 0.5, k: int = DEFAULT_K,
                 chunk: int = 8, draft_run: int = 32, large_run: int = 16, prefire: str = "never",
                 prefire_tau: float | None = None, streamed: bool = True):
        if router is None and 0 < tau < 1:
            raise ValueError("a threshold strictly between 0 and 1 needs a router")
        if prefire not in PREFIRE_MODES:
            raise ValueError(f"prefire must be one of {PREFIRE_MODES}, got {prefire!r}")
        self.slm, self.llm, self.router, self.tau, self.k, self.chunk = slm, llm, router, tau, k, chunk
        # both members streaming remote (collab.r2r_remote): stream lengths and when to open a large stream early
        self.draft_run, self.large_run, self.prefire = max(1, draft_run), max(1, large_run), prefire
        self.prefire_tau = tau / 10 if prefire_tau is None else prefire_tau
        self.streamed = streamed  # False: the chunked one-call-at-a-time remote path even where members stream
        if router is not None:
            self.k = router.k
        self.routed = 0
        self.positions = 0

    @classmethod
    def load_artifact(cls, path: str | Path) -> tuple[R2RRouter, dict[str, Any]]:
        """The router and the file's metadata (``tandem train r2r``)."""
        loaded: tuple[R2RRouter, dict[str, Any]] = R2RRouter.load(path)
        return loaded

    @classmethod
    def from_loaded(cls, loaded: tuple[R2RRouter, dict[str, Any]], **kwargs: Any) -> R2RStrategy:
        """The file's router and calibrated ``tau`` unless ``kwargs`` give them."""
        router, meta = loaded
        kwargs.setdefault("router", router)
        if meta.get("tau") is not None:
            kwargs.setdefault("tau", float(meta["tau"]))
        return cls(**kwargs)

    def stateful_members(self) -> tuple[str, ...]:
        """The small model, where the router reads its hidden state (``tandem train r2r --hidden``)."""
        return (self.slm,) if self.router is not None and self.router.hidden_size else ()

    def prepare(self, session: Session) -> None:
        session.member(self.llm)
        if self.slm in self.stateful_members() and not session.member(self.slm).has_state:
            raise TypeError(f"the R2R router reads the hidden state of '{self.slm}', which does not give one (a "
                            "remote model): use a logprobs-only router (tandem train r2r without --hidden)")

    def decide(self, signals: Signals) -> tuple[float | None, bool]:
        """One position: the router's p (None where τ alone decides) and whether the large model writes it
        (:func:`collab.remote_plan.is_flagged`), counted in ``positions`` and ``routed``."""
        p = self.router.prob(signals) if self.router is not None and 0 < self.tau < 1 else None
        flagged = is_flagged(p, self.tau)
        self.positions += 1
        self.routed += flagged
        return p, flagged

    def routes(self, signals: Signals) -> bool:
        return self.decide(signals)[1]

    async def advance(self, session: Session, budget: int) -> None:
        slm_local, llm_local = session.member(self.slm).in_process, session.member(self.llm).in_process
        if slm_local and llm_local:
            # both in process: up to `chunk` positions in one worker thread (one thread hop per chunk, not per token)
            await asyncio.to_thread(self._advance_in_process, session, min(self.chunk, budget))
        elif session.scratch.pop(PENDING, False):
            tok, _ = await session.next_token(self.llm, top_logprobs=self.k)
            session.append(tok, self.llm)
        elif slm_local:
            logits, hidden = await session.state(self.slm)
            tok = session.pick([logits])
            if self.routes(signals_from_logits(logits, tok, self.k, hidden)):
                tok, _ = await session.next_token(self.llm, top_logprobs=self.k)
                session.append(tok, self.llm)
            else:
                session.append(tok, self.slm)
        elif self.streamed and session.member(self.slm).streams and session.member(self.llm).streams:
            await advance_streamed(self, session, budget)
        else:
            await self._advance_remote(session, budget)

    def _advance_in_process(self, session: Session, n: int) -> None:
        """Up to ``n`` positions, blocking, with the same model calls, picks and router calls as one position at a
        time. One writer per call: a position flagged after small-model tokens is left to the next call."""
        with torch.no_grad():
            if session.scratch.pop(PENDING, False):
                session.append(session.pick([session.state_sync(self.llm)[0]]), self.llm)
                return
            for i in range(n):
                logits, hidden = session.state_sync(self.slm)
                tok = session.pick([logits])
                if self.routes(signals_from_logits(logits, tok, self.k, hidden)):
                    if i:
                        session.scratch[PENDING] = True
                    else:
                        session.append(session.pick([session.state_sync(self.llm)[0]]), self.llm)
                    return
                session.append(tok, self.slm)
                if session.done:
                    return

    async def _advance_remote(self, session: Session, budget: int) -> None:
        """The small model drafts a chunk; its tokens up to the first flagged position are kept and the large model
        writes that position (now if it is the chunk's first, else on the next call: one writer per call)."""
        draft = await session.complete(self.slm, min(self.chunk, budget), top_logprobs=self.k,
                                       stop_ids=sorted(session.stop_ids))
        for i, step in enumerate(draft.steps):
            if self.routes(signals_from_top(step.top, step.token_id, step.logprob, self.k)):
                if i:
                    session.scratch[PENDING] = True
                else:
                    tok, _ = await session.next_token(self.llm, top_logprobs=self.k)
                    session.append(tok, self.llm)
                return
            session.append(step.token_id, self.slm)
            if session.done:
                return


def average_activated_params(usage: Mapping[str, ModelUsage], n_tokens: int, params: Mapping[str, int]) -> float:
    """Parameters run per answer token: Σ_m params[m] · (positions m decoded) / answer length."""
    if n_tokens <= 0:
        return 0.0
    return sum(params[m] * u.completion_tokens for m, u in usage.items() if m in params) / n_tokens
