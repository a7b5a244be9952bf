"""A minimal in-process ``LogitModel`` over a transformers causal LM that also exposes its last hidden state.

:class:`HFModel` is collab's own in-process transport for training and label pipelines (``collab`` never imports
``gateway``): ``next_logits(ids)`` and ``next_state(ids)`` reuse one KV cache keyed by the ids it holds
(:class:`collab.prefix_cache.PrefixKVCache`: cropped back to the longest common prefix, so a caller that skipped tokens
gets a lazy catch-up: only the missing tokens run),
``complete_ids`` decodes greedily or with seeded sampling, ``forward_all`` gives teacher-forced logits and hidden
states for whole sequences (training), and ``greedy_batch`` decodes several prompts greedily in one left-padded batch
(label pipelines: one batched decode step costs far less than one step per prompt on a CPU). What it leaves out:
batching of the cached calls, threads (calls block; the session runs them in a worker thread), top-p, stop strings,
and serving (``gateway.backends.local`` does that).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import torch

from collab.prefix_cache import PrefixKVCache, common_prefix
from collab.protocol import IdCompletion, TokenStep


class HFModel:
    """One transformers causal LM in process; ``name`` is how sessions and provenance call it."""

    def __init__(self, name: str, path: str | Path | None = None, *, model: Any = None, tokenizer: Any = None,
                 eos_ids: set[int] | None = None, device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.device = torch.device(device)
        if model is None:
            if path is None:
                raise ValueError("give a path or a model")
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        if tokenizer is None and path is not None:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.hidden_size = int(model.config.hidden_size)
        eos = model.config.eos_token_id if eos_ids is None else eos_ids
        self.eos_ids: set[int] = set(eos if isinstance(eos, (list, set, tuple)) else [eos] if eos is not None else [])
        self._lock = threading.RLock()  # one cached forward pass or completion at a time; guards the cache
        self._cache = PrefixKVCache(self.model, self.device)

    # ---- cached forward --------------------------------------------------------------------------------------

    @property
    def forward_tokens(self) -> int:
        """Tokens actually run through the model by the cached calls (for tests of the catch-up)."""
        return self._cache.forward_tokens

    def reset_cache(self) -> None:
        with self._lock:
            self._cache.reset()

    def next_state(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``[V]`` and the last layer's hidden state ``[H]`` after ``ids`` (float32, CPU)."""
        if not ids:
            raise ValueError("ids must not be empty")
        with self._lock, torch.no_grad():
            out, _ = self._cache.forward(ids, output_hidden_states=True)
            return out.logits[0, -1].float().cpu(), out.hidden_states[-1][0, -1].float().cpu()

    def next_logits(self, ids: list[int]) -> torch.Tensor:
        return self.next_state(ids)[0]

    async def anext_state(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return await asyncio.to_thread(self.next_state, ids)

    async def anext_logits(self, ids: list[int]) -> torch.Tensor:
        return (await self.anext_state(ids))[0]

    def forward_all(self, ids: torch.Tensor, *, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits ``[B, T, V]`` and last hidden states ``[B, T, H]`` for ``ids`` ``[B, T]`` (no cache)."""
        with torch.set_grad_enabled(grad):
            out = self.model(input_ids=ids.to(self.device), use_cache=False, output_hidden_states=True)
            return out.logits.float(), out.hidden_states[-1].float()

    def greedy_batch(self, prompts: list[list[int]], max_tokens: list[int], stop_ids: list[int] | None = None
                     ) -> list[list[int]]:
        """Greedy continuations of each prompt (row ``i`` at most ``max_tokens[i]`` tokens, ending with its stop
        token if it writes one, as ``complete_ids`` does), decoded together. The prompts' common prefix runs once
        and its KV is shared by every row; the rest of each prompt is left-padded after it (masked, with its own
        positions). The KV cache of the cached calls is not touched."""
        from transformers import DynamicCache

        if len(prompts) != len(max_tokens):
            raise ValueError("one budget per prompt")
        if not prompts:
            return []
        if any(not p for p in prompts):
            raise ValueError("prompts must not be empty")
        stops = torch.tensor(sorted(set(stop_ids or ()) | self.eos_ids) or [-1], dtype=torch.long)
        n = len(prompts)
        shared = min(len(p) for p in prompts) - 1  # every row keeps at least one token of its own
        first = prompts[0]
        for p in prompts[1:]:
            shared = min(shared, common_prefix(first, p))
        tails = [p[shared:] for p in prompts]
        width = max(len(t) for t in tails)
        ids = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        positions = torch.zeros((n, width), dtype=torch.long)
        for i, t in enumerate(tails):
            ids[i, width - len(t):] = torch.tensor(t, dtype=torch.long)
            mask[i, shared + width - len(t):] = 1
            positions[i, width - len(t):] = torch.arange(shared, shared + len(t))
        budget = torch.tensor(max_tokens, dtype=torch.long)
        done = budget <= 0
        outputs: list[list[int]] = [[] for _ in range(n)]
        kw, dev = self._cache._cache_kw, self.device
        cache = DynamicCache(config=self.model.config)
        with self._lock, torch.no_grad():
            if shared:
                self.model(input_ids=torch.tensor([first[:shared]], device=dev), use_cache=True, logits_to_keep=1,
                           **{kw: cache})
                cache.batch_repeat_interleave(n)
            out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                             use_cache=True, logits_to_keep=1, **{kw: cache})
            positions = positions[:, -1:]
            for step in range(int(budget.max())):
                if bool(done.all()):
                    break
                nxt = out.logits[:, -1, :].argmax(-1).cpu()
                for i in torch.nonzero(~done).flatten().tolist():
                    outputs[i].append(int(nxt[i]))
                done = done | torch.isin(nxt, stops) | (budget <= step + 1)
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
                positions = positions + 1
                out = self.model(input_ids=nxt[:, None].to(dev), attention_mask=mask.to(dev),
                                 position_ids=positions.to(dev), use_cache=True, logits_to_keep=1, **{kw: cache})
        return outputs

    # ---- TokenModel ------------------------------------------------------------------------------------------

    async def complete_ids(self, ids: list[int], max_tokens: int, *, stop_ids: list[int] | None = None,
                           top_logprobs: int = 0, temperature: float = 0.0, seed: int | None = None) -> IdCompletion:
        return await asyncio.to_thread(self._complete, list(ids), max_tokens, stop_ids, top_logprobs, temperature,
                                       seed)

    def _complete(self, ids: list[int], max_tokens: int, stop_ids: list[int] | None, k: int, temperature: float,
                  seed: int | None) -> IdCompletion:
        stops = set(stop_ids or ()) | self.eos_ids
        gen = torch.Generator().manual_seed(seed or 0) if temperature else None
        cur, steps, finish = list(ids), [], "length"
        with self._lock:
            cached = self._cache.reusable(ids)
            for _ in range(max_tokens):
                logits = self.next_logits(cur)
                lps = torch.log_softmax(logits, dim=-1)
                if temperature:
                    tid = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
                else:
                    tid = int(torch.argmax(logits))
                top: list[tuple[int, float]] = []
                if k:
                    v, i = torch.topk(lps, min(k, lps.numel()))
                    top = list(zip(i.tolist(), v.tolist(), strict=True))
                steps.append(TokenStep(tid, float(lps[tid]), top))
                cur.append(tid)
                if tid in stops:
                    finish = "stop"
                    break
        return IdCompletion(steps, finish, len(ids), cached)
