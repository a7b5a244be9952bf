"""The decision rules of R2R's streamed remote protocol (:mod:`collab.r2r_remote`), as pure functions.

- :func:`is_flagged` — whether the large model writes a position (the router's p against τ; ``τ ≥ 1`` never,
  ``τ ≤ 0`` always: the same rule as ``R2RStrategy.routes``).
- :func:`should_prefire` — whether to open a large-model stream at the frontier *before* any position there is
  flagged, so that a flag soon after finds the large model's token already computed or in progress (``never``;
  ``near``: the last position's p reached ``τ_pre`` without reaching τ; ``always``: whenever no valid large stream
  runs). With the large model on a core of its own its server is otherwise idle while the small model drafts, and a
  running large stream also keeps the server's prefix cache filled up to the frontier, so a flag recomputes fewer
  prompt tokens; the price is a fresh call queued behind the cancelled stream's last step, and a draft that often
  disagrees with the large model makes most early streams useless (R2R's default is ``never``: the large stream
  opened at a flag still runs on; ``tandem eval collab --vllm --collab-param prefire=…`` compares them).
- :func:`wait_for_stream` — at a flag, whether to wait for the running large stream to reach the position (``gap``
  more decode steps) or to cancel it and open a fresh call there (one prefill).
- :func:`stream_agrees` — whether a speculative stream still continues the session's answer.
- :func:`recompute_tokens` / :func:`pick_block_size` — vLLM's prefix cache reuses whole blocks and recomputes the
  rest, so a call on a prompt it has seen recomputes ``L − B·⌊(L−1)/B⌋`` tokens; smaller blocks recompute less
  (CPU attention accepts multiples of 32 only).
- :class:`Ewma` — the running estimates the wait-or-fresh rule uses.

What it leaves out: I/O (streams, servers) and the router itself (``collab.r2r``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PREFIRE_MODES = ("never", "near", "always")
CPU_BLOCK_MULTIPLE = 32  # vLLM's CPU attention accepts block sizes that are multiples of 32


def is_flagged(p: float | None, tau: float) -> bool:
    """The large model writes this position: ``τ ≤ 0`` always, ``τ ≥ 1`` never, else ``p ≥ τ``."""
    if tau >= 1:
        return False
    if tau <= 0:
        return True
    return p is not None and p >= tau


def should_prefire(mode: str, p_last: float | None, tau: float, tau_pre: float, large_running: bool) -> bool:
    """Open a large stream at the frontier now? ``p_last`` is the router's p at the position just written by the
    small model (None when there is none). Never while a valid large stream runs."""
    if mode not in PREFIRE_MODES:
        raise ValueError(f"prefire must be one of {PREFIRE_MODES}, got {mode!r}")
    if large_running or mode == "never" or tau >= 1:
        return False
    if mode == "always" or tau <= 0:
        return True
    return p_last is not None and p_last >= tau_pre


def wait_for_stream(gap: int, token_s: float | None, fresh_s: float | None, max_gap: int = 4) -> bool:
    """At a flagged position ``gap`` tokens ahead of what the running large stream has delivered: wait for it
    (``gap`` decode steps of ``token_s``) rather than cancel it and open a fresh call (first token after ``fresh_s``)?
    Without estimates yet, wait only for the next token (``gap ≤ 1``); never for more than ``max_gap``."""
    if gap <= 0:
        return True
    if gap > max_gap:
        return False
    if token_s is None or fresh_s is None:
        return gap <= 1
    return gap * token_s <= fresh_s


def stream_agrees(start: int, tokens: Sequence[int], output: Sequence[int]) -> bool:
    """A stream opened at answer position ``start`` that has delivered ``tokens`` still continues ``output``: every
    position both cover holds the same token (positions it has not reached yet cannot disagree)."""
    if start > len(output):
        return False
    n = min(len(tokens), len(output) - start)
    return list(tokens[:n]) == list(output[start:start + n])


def recompute_tokens(prompt_len: int, block: int) -> int:
    """Tokens a prefix-cached call on a ``prompt_len``-token prompt recomputes when the cache holds the prompt's
    prefix: the cache reuses whole blocks and always recomputes the last token."""
    if prompt_len <= 0:
        return 0
    return prompt_len - block * ((prompt_len - 1) // block)


def pick_block_size(prompt_lens: Iterable[int], candidates: Sequence[int] = (32, 64, 128)) -> int:
    """The candidate block size (a multiple of 32) with the fewest recomputed tokens over ``prompt_lens`` (ties: the
    larger block, fewer blocks to track)."""
    lens = list(prompt_lens)
    ok = [b for b in candidates if b > 0 and b % CPU_BLOCK_MULTIPLE == 0]
    if not ok:
        raise ValueError(f"no block size that is a multiple of {CPU_BLOCK_MULTIPLE} in {list(candidates)}")
    return min(ok, key=lambda b: (sum(recompute_tokens(n, b) for n in lens), -b))


@dataclass
class Ewma:
    """An exponentially weighted mean (``None`` until the first value)."""

    alpha: float = 0.3
    value: float | None = None

    def add(self, x: float) -> float:
        self.value = x if self.value is None else (1 - self.alpha) * self.value + self.alpha * x
        return self.value
