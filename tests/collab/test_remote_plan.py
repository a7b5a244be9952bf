"""The streamed remote protocol's decision rules (collab.remote_plan) against hand-worked references."""

from __future__ import annotations

import pytest

from collab.remote_plan import (
    Ewma,
    is_flagged,
    pick_block_size,
    recompute_tokens,
    should_prefire,
    stream_agrees,
    wait_for_stream,
)


def test_is_flagged_matches_the_threshold_rule() -> None:
    assert is_flagged(0.3, 0.3) and not is_flagged(0.29, 0.3)
    assert is_flagged(None, 0.0) and is_flagged(0.0, -1.0)  # τ ≤ 0: always
    assert not is_flagged(1.0, 1.0) and not is_flagged(None, 2.0)  # τ ≥ 1: never
    assert not is_flagged(None, 0.5)  # no score, a real threshold: not flagged


@pytest.mark.parametrize(("mode", "p", "running", "want"), [
    ("never", 0.9, False, False),
    ("always", None, False, True),
    ("always", 0.0, True, False),  # a valid large stream already runs
    ("near", 0.05, False, True),  # at τ_pre = 0.05
    ("near", 0.049, False, False),
    ("near", None, False, False),
])
def test_should_prefire(mode: str, p: float | None, running: bool, want: bool) -> None:
    assert should_prefire(mode, p, tau=0.5, tau_pre=0.05, large_running=running) is want


def test_should_prefire_edges() -> None:
    assert not should_prefire("always", 0.9, tau=1.0, tau_pre=0.0, large_running=False)  # never routes: no large
    assert should_prefire("near", None, tau=0.0, tau_pre=0.5, large_running=False)  # always routes
    with pytest.raises(ValueError):
        should_prefire("sometimes", 0.1, 0.5, 0.1, False)


def test_wait_for_stream() -> None:
    assert wait_for_stream(0, None, None) and wait_for_stream(-3, 1.0, 0.0)  # already delivered
    assert wait_for_stream(1, None, None) and not wait_for_stream(2, None, None)  # no estimates: next token only
    assert wait_for_stream(3, 0.04, 0.13) and not wait_for_stream(4, 0.04, 0.13)  # 3·40 ms ≤ 130 ms < 4·40 ms
    assert not wait_for_stream(5, 0.001, 10.0, max_gap=4)


def test_stream_agrees() -> None:
    out = [5, 6, 7, 8]
    assert stream_agrees(1, [6, 7], out)
    assert stream_agrees(2, [7, 8, 9, 10], out)  # ahead of the answer: the part both cover agrees
    assert stream_agrees(4, [1, 2], out) and stream_agrees(3, [], out)
    assert not stream_agrees(2, [7, 9], out)
    assert not stream_agrees(5, [1], out)  # opened after a position the answer has not reached


def test_recompute_tokens_reference() -> None:
    # whole blocks of the prompt are reused, the last token always runs: L − B·⌊(L−1)/B⌋
    assert [recompute_tokens(n, 32) for n in (1, 31, 32, 33, 64, 65, 256)] == [1, 31, 32, 1, 32, 1, 32]
    assert recompute_tokens(256, 128) == 128 and recompute_tokens(200, 128) == 72 and recompute_tokens(0, 32) == 0


def test_pick_block_size() -> None:
    lens = range(100, 300)
    assert pick_block_size(lens) == 32
    assert pick_block_size([129, 257], (32, 64, 128)) == 128  # each recomputes 1 token: ties → larger block
    assert pick_block_size(lens, (16, 64)) == 64  # 16 is no multiple of 32
    with pytest.raises(ValueError):
        pick_block_size(lens, (16, 48))


def test_ewma() -> None:
    e = Ewma(alpha=0.5)
    assert e.value is None
    assert e.add(2.0) == 2.0 and e.add(4.0) == 3.0 and e.add(3.0) == 3.0
