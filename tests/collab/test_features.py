"""Router features against reference computations."""

from __future__ import annotations

import math

import pytest
import torch

from collab.features import FLOOR, signals_from_logits, signals_from_top, step_features


def test_signals_from_logits_reference() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf")])
    s = signals_from_logits(logits, 1, k=3)
    p = [math.exp(x) for x in (2.0, 1.0, 0.0, -1.0)]
    z = sum(p)
    p = [x / z for x in p]
    assert s.entropy == pytest.approx(-sum(x * math.log(x) for x in p), rel=1e-5)
    assert s.top.tolist() == pytest.approx([math.log(x) for x in p[:3]], rel=1e-5)
    assert s.token_logprob == pytest.approx(math.log(p[1]), rel=1e-5)
    assert signals_from_logits(logits, 0, k=8).top[-1] == FLOOR  # padded beyond the vocabulary


def test_signals_from_top_equals_full_when_topk_covers_vocab() -> None:
    logits = torch.randn(6, generator=torch.Generator().manual_seed(0))
    full = signals_from_logits(logits, 2, k=6)
    lps = torch.log_softmax(logits, -1)
    top = list(enumerate(lps.tolist()))[::-1]  # any order
    part = signals_from_top(top, 2, float(lps[2]), k=6)
    assert part.entropy == pytest.approx(full.entropy, rel=1e-5)
    torch.testing.assert_close(part.top, full.top)
    # with fewer alternatives, the leftover mass counts as one bucket: a lower bound on the entropy
    assert signals_from_top(top[:2], 2, float(lps[2]), k=6).entropy <= full.entropy + 1e-6


def test_step_features_reference() -> None:
    sigs = [signals_from_logits(torch.tensor([0.0, 0.0]), 0, k=2), signals_from_logits(torch.tensor([5.0, 0.0]), 0,
                                                                                       k=2)]
    f = step_features(sigs, step_index=3, ended_at_delimiter=True)
    lp = [math.log(0.5), -math.log1p(math.exp(-5.0))]
    assert f[0] == pytest.approx(sum(lp) / 2, rel=1e-5)
    assert f[1] == pytest.approx(min(lp), rel=1e-5)
    assert f[4] == pytest.approx(2.5, rel=1e-5)  # mean top1 - top2 margin
    assert f[5] == 0.0  # log 0.5 is not below log 0.5
    assert f[6:].tolist() == pytest.approx([math.log(3), 0.3, 1.0])
    assert step_features([], step_index=0, ended_at_delimiter=False)[:6].abs().sum() == 0

