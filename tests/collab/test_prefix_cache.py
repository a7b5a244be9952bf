"""The shared prefix KV cache on a randomly initialised tiny Llama: logits through the cache equal a fresh forward pass
over the whole sequence for every kind of next call (extension, repeat, divergence, shorter, unrelated), a shared
prefix is reused and only the new tokens run, and a cache that cannot be cropped starts over."""

from __future__ import annotations

import pytest
import torch

from collab.prefix_cache import PrefixKVCache, common_prefix


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def fresh(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]


def test_common_prefix_rules() -> None:
    assert common_prefix([], [1, 2]) == 0
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix([1, 2, 3], [1, 2, 3]) == 2  # at least one token must run
    assert common_prefix([1, 2, 3, 4], [1, 2]) == 1
    assert common_prefix([1, 2, 3, 4], [1, 9, 3, 4, 5]) == 1
    assert common_prefix([5], [6, 7]) == 0 and common_prefix([1, 2], [1]) == 0 and common_prefix([1], []) == 0


def test_cached_logits_equal_a_fresh_forward_and_the_prefix_is_reused(model) -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randint(0, 97, (12,), generator=g).tolist()
    longer = base + torch.randint(0, 97, (7,), generator=g).tolist()
    divergent = base[:5] + [(base[5] + 1) % 97] + base[6:]
    other = [(t + 3) % 97 for t in base[:4]]
    cache = PrefixKVCache(model, "cpu")
    calls = [  # (ids, tokens the cache should reuse)
        (base, 0),
        (longer, len(base)),
        (longer, len(longer) - 1),
        (divergent, 5),
        (base[:3], 2),
        (other, 0),
        (other + [7], len(other)),
    ]
    ran = 0
    for ids, want_reused in calls:
        assert cache.reusable(ids) == want_reused
        out, reused = cache.forward(ids, logits_to_keep=1)
        ran += len(ids) - reused
        assert reused == want_reused and cache.forward_tokens == ran
        assert cache.ids == ids and cache.kv.get_seq_length() == len(ids)
        torch.testing.assert_close(out.logits[0, -1], fresh(model, ids), atol=1e-5, rtol=1e-4)
    # model keywords pass through: hidden states for the tokens that ran
    out, reused = cache.forward(other + [7, 8], output_hidden_states=True)
    assert reused == len(other) + 1 and out.hidden_states[-1].shape == (1, 1, 64)
    cache.reset()
    assert cache.kv is None and cache.ids == [] and cache.reusable(base) == 0


def test_a_cache_that_cannot_be_cropped_starts_over(model) -> None:
    from transformers import DynamicCache

    class Uncroppable(DynamicCache):
        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("no crop")

    ids = list(range(10, 20))
    cache = PrefixKVCache(model, "cpu")
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), cache=Uncroppable(config=model.config), use_cache=True)
    cache.kv = out.get("cache")
    cache.ids = list(ids)
    assert isinstance(cache.kv, Uncroppable)
    nxt = ids[:4] + [3, 4]
    out, reused = cache.forward(nxt)
    assert reused == 0 and cache.ids == nxt and cache.kv.get_seq_length() == len(nxt)
    torch.testing.assert_close(out.logits[0, -1], fresh(model, nxt), atol=1e-5, rtol=1e-4)
