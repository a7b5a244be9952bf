"""One causal LM's KV cache keyed by the token ids it holds: a forward pass over ids that share a prefix with the
cached ids runs only the tokens after that prefix.

:class:`PrefixKVCache` is the one copy of this rule for both in-process transports, ``collab.inproc.HFModel`` and
``gateway.backends.local.LocalBackend`` (it lives in ``collab`` because ``collab`` never imports ``gateway``). The rule:
the reused prefix is the longest common prefix of the cached ids and the new ids, capped at ``len(ids) - 1`` (at least
one token must run to produce logits); the cache is cropped back to it, or dropped when nothing is shared or it cannot
be cropped; afterwards the cache holds exactly ``ids``. ``tests/collab/test_prefix_cache.py`` checks that the logits
equal a fresh forward pass.

What it leaves out: locking (not thread-safe: each owner serialises calls under its own lock, which also covers its
generation loop), eviction (one sequence per model; a new unrelated prompt replaces it), batching, and what to read
from the model's output (logits, hidden states: the caller passes the model keywords and picks).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch


def common_prefix(cached: list[int], ids: list[int]) -> int:
    """How many leading tokens of ``ids`` a cache holding ``cached`` can reuse: the longest common prefix, capped at
    ``len(ids) - 1`` so that at least one token runs (0 for empty ``ids``)."""
    n = min(len(cached), len(ids) - 1)
    if n <= 0:
        return 0
    if cached[:n] == ids[:n]:  # the usual case (the next decode step): one C-level comparison
        return n
    return next(i for i in range(n) if cached[i] != ids[i])


class PrefixKVCache:
    """The KV cache of one transformers causal LM, with the ids it holds (``ids``; ``kv`` is ``None`` when empty).

    ``forward_tokens`` counts the tokens actually run through the model since construction (resets keep it)."""

    def __init__(self, model: Any, device: torch.device | str):
        self.model = model
        self.device = torch.device(device)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.kv: Any = None
        self.ids: list[int] = []
        self.forward_tokens = 0

    def reset(self) -> None:
        """Drop the cached keys and values."""
        self.kv, self.ids = None, []

    def reusable(self, ids: list[int]) -> int:
        """How many leading tokens of ``ids`` the next :meth:`forward` would reuse (before any crop failure)."""
        return 0 if self.kv is None else common_prefix(self.ids, ids)

    def forward(self, ids: Sequence[int], **model_kw: Any) -> tuple[Any, int]:
        """Run the model over ``ids`` (non-empty), reusing the cached prefix. ``model_kw`` go to the model's forward
        (e.g. ``logits_to_keep=1`` or ``output_hidden_states=True``). Returns the model's output for the tokens that
        ran (the last position is ``ids[-1]``'s) and how many tokens were reused."""
        ids = list(ids)
        common = self.reusable(ids)
        if common == 0:
            self.reset()
        elif common < len(self.ids):
            try:
                self.kv.crop(-(len(self.ids) - common))
                self.ids = self.ids[:common]
            except Exception:  # a cache that cannot be cropped: start over
                self.reset()
                common = 0
        new = torch.tensor([ids[common:]], dtype=torch.long, device=self.device)
        with torch.no_grad():
            out = self.model(input_ids=new, use_cache=True, **{self._cache_kw: self.kv}, **model_kw)
        self.forward_tokens += len(ids) - common
        kv = out.get("cache")
        self.kv = kv if kv is not None else out.get("past_key_values")
        self.ids = ids
        return out, common
