"""Router features, as pure functions: a model's signals at one position, and a draft step's summary.

:class:`Signals` is what R2R's router sees at a position of the small model: its sorted top-k logprobs, the entropy
of its next-token distribution, the token it chose and (in process) its last hidden state. From full logits the
entropy is exact; from a remote model's top-k logprobs it is the entropy of the top-k part plus the leftover mass
spread as one bucket (:func:`topk_entropy`, a lower bound on the true entropy). Missing top-k slots are filled with
``FLOOR``.

:func:`step_features` summarises a draft step (Arbitrage) from its tokens' signals: mean / min token logprob, mean /
max entropy, mean top-1 − top-2 margin, the share of tokens with logprob below log ½, log length, step index and
whether the step ended at the delimiter. What it leaves out: the routers themselves (``collab.r2r``,
``collab.arbitrage``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

FLOOR = -30.0
DEFAULT_K = 8
STEP_FEATURES = 9


@dataclass
class Signals:
    """One position's signals: ``top`` sorted top-k logprobs ``[k]``, entropy, chosen token, its logprob, hidden."""

    top: torch.Tensor
    entropy: float
    token_id: int
    token_logprob: float
    hidden: torch.Tensor | None = None

    def dense(self) -> torch.Tensor:
        """``[k + 2]``: the top-k logprobs, the entropy and the chosen token's logprob (all clipped at ``FLOOR``)."""
        return torch.cat([self.top.clamp(min=FLOOR),
                          torch.tensor([self.entropy, max(self.token_logprob, FLOOR)], dtype=torch.float32)])


def signals_from_logits(logits: torch.Tensor, token_id: int, k: int = DEFAULT_K,
                        hidden: torch.Tensor | None = None) -> Signals:
    """Signals from full next-token logits ``[V]``."""
    lps = torch.log_softmax(logits.float(), -1)
    top = torch.topk(lps, min(k, lps.numel())).values
    if top.numel() < k:
        top = torch.cat([top, torch.full((k - top.numel(),), FLOOR)])
    p = lps.exp()
    ent = float(-(p * torch.where(p > 0, lps, torch.zeros_like(lps))).sum())
    return Signals(top, ent, int(token_id), float(lps[token_id]), hidden)


def topk_entropy(top: Sequence[float]) -> float:
    """The entropy that top-k logprobs alone give: the top-k part plus the leftover mass as one bucket (a lower
    bound on the true entropy; slots at ``FLOOR`` are empty). A remote model's :class:`Signals` carry this one."""
    probs = [math.exp(v) for v in top if v > FLOOR]
    ent = -sum(p * math.log(p) for p in probs if p > 0)
    rest = 1.0 - sum(probs)
    if rest > 1e-9:
        ent -= rest * math.log(rest)
    return ent


def signals_from_top(top: Sequence[tuple[int, float]], token_id: int, token_logprob: float,
                     k: int = DEFAULT_K) -> Signals:
    """Signals from a remote model's (id, logprob) alternatives (any order) and its chosen token."""
    vals = sorted((float(v) for _, v in top), reverse=True)[:k]
    vals += [FLOOR] * (k - len(vals))
    lp = token_logprob if math.isfinite(token_logprob) else FLOOR
    return Signals(torch.tensor(vals, dtype=torch.float32), topk_entropy(vals), int(token_id), lp, None)


def step_features(signals: Sequence[Signals], *, step_index: int, ended_at_delimiter: bool) -> torch.Tensor:
    """``[STEP_FEATURES]`` summary of one draft step (an empty step gives zeros for the token statistics)."""
    if signals:
        lps = torch.tensor([max(s.token_logprob, FLOOR) for s in signals])
        ents = torch.tensor([s.entropy for s in signals])
        margins = torch.tensor([float(s.top[0] - s.top[1]) if s.top.numel() > 1 else 0.0 for s in signals])
        stats = [float(lps.mean()), float(lps.min()), float(ents.mean()), float(ents.max()),
                 float(margins.clamp(max=-FLOOR).mean()), float((lps < math.log(0.5)).float().mean())]
    else:
        stats = [0.0] * 6
    return torch.tensor(stats + [math.log1p(len(signals)), step_index / 10.0, float(ended_at_delimiter)],
                        dtype=torch.float32)
