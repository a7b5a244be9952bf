"""The in-process backend's pure decoding helpers against reference twins written as plain loops: top-p filter,
sampling, top-k logprobs, stop-string scanning; and the text loop's stop handling on a fixed token stream."""

from __future__ import annotations

import pytest
import torch

from collab.protocol import TokenStep
from gateway.backends.local_decode import (
    chat_logprob_entry,
    check_top_logprobs,
    completion_logprobs,
    find_stop,
    held_back,
    message_text,
    pick_token,
    stream_text,
    top_logprobs,
    top_p_filter,
)
from gateway.errors import InvalidRequest

# ---- pure helpers against reference twins ---------------------------------------------------------------------


def ref_top_p(probs: list[float], top_p: float) -> list[float]:
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, mass = set(), 0.0
    for i in order:
        if mass >= top_p and kept:
            break
        kept.add(i)
        mass += probs[i]
    total = sum(probs[i] for i in kept)
    return [probs[i] / total if i in kept else 0.0 for i in range(len(probs))]


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_top_p_filter_matches_reference(top_p: float) -> None:
    g = torch.Generator().manual_seed(int(top_p * 1000))
    probs = torch.softmax(torch.randn(50, generator=g, dtype=torch.float64) * 2, 0)
    got = top_p_filter(probs, top_p)
    want = ref_top_p(probs.tolist(), top_p)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-12)
    assert top_p_filter(probs, 1.0) is probs


def test_pick_token_greedy_and_seeded() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert pick_token(logits, 0.0, None, None) == 1
    assert pick_token(logits, None, 0.5, None) == 1
    draws = [pick_token(logits, 1.0, None, torch.Generator().manual_seed(s)) for s in range(200)]
    assert set(draws) >= {1, 2} and draws == [pick_token(logits, 1.0, None, torch.Generator().manual_seed(s))
                                              for s in range(200)]
    assert {pick_token(logits, 1.0, 0.4, torch.Generator().manual_seed(s)) for s in range(50)} == {1}


def ref_find_stop(text: str, stops: list[str], start: int) -> int | None:
    for i in range(start, len(text)):
        if any(s and text.startswith(s, i) for s in stops):
            return i
    return None


def ref_held_back(text: str, stops: list[str]) -> int:
    return max([n for s in stops for n in range(1, len(s)) if len(text) >= n and text[-n:] == s[:n]], default=0)


@pytest.mark.parametrize("text", ["", "abc", "hello wor", "xx\n\nyy", "the end\n", "aaab", "ababa"])
def test_stop_scanning_matches_reference(text: str) -> None:
    for stops in (["\n\n"], ["world", "wor!"], ["ab", "bab", "aab"], ["end\n", "x"], ["zzz"]):
        for start in range(len(text) + 1):
            assert find_stop(text, stops, start) == ref_find_stop(text, stops, start)
        assert held_back(text, stops) == ref_held_back(text, stops)


def test_top_logprobs_sorted() -> None:
    lp = torch.log_softmax(torch.tensor([0.5, 2.0, -1.0, 1.0]), 0)
    got = top_logprobs(lp, 3)
    assert [i for i, _ in got] == [1, 3, 0]
    assert all(a[1] >= b[1] for a, b in zip(got, got[1:], strict=False))
    assert top_logprobs(lp, 0) == []


def test_check_top_logprobs_bounds() -> None:
    assert check_top_logprobs(None) == 0 and check_top_logprobs(20) == 20
    for bad in (-1, 21):
        with pytest.raises(InvalidRequest):
            check_top_logprobs(bad)


def test_message_text_takes_text_parts() -> None:
    assert message_text(None) == "" and message_text("hi") == "hi"
    assert message_text([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, {"text": "b"}]) == "ab"


# ---- the text loop on the zoo tokenizer (one character per token) ----------------------------------------------


@pytest.fixture(scope="module")
def zoo_tok(zoo_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(zoo_tokenizer_dir))


def run_text(tok, text: str, stops: list[str], *, eos_after: int | None = None, want_lp: bool = True):
    """Stream ``text`` one token per character (an EOS id after ``eos_after`` characters); returns the finish
    reason, the emitted pieces, the steps reported with them and how many steps were consumed."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if eos_after is not None:
        ids = ids[:eos_after] + [tok.eos_token_id] + ids[eos_after:]
    consumed = 0

    def steps():
        nonlocal consumed
        for i in ids:
            consumed += 1
            yield TokenStep(i, -0.5, [])

    pieces: list[str] = []
    reported: list[TokenStep] = []

    def emit(piece: str, st: list[TokenStep]) -> None:
        pieces.append(piece)
        reported.extend(st)

    finish = stream_text(steps(), tok, {tok.eos_token_id}, stops, want_lp, emit)
    return finish, pieces, reported, consumed


def test_stream_text_cuts_at_the_first_stop_and_asks_for_nothing_after(zoo_tok) -> None:
    text = "hello world\n\nbye now"
    finish, pieces, reported, consumed = run_text(zoo_tok, text, ["\n\n", "zzz"])
    assert finish == "stop" and "".join(pieces) == "hello world"
    assert consumed == len("hello world\n\n")  # the token that completed the stop is the last one asked for
    assert len(reported) == consumed  # every consumed step is reported once, with the last piece
    # without a stop the whole text comes out, in more than one piece, finish "length"
    finish, pieces, reported, consumed = run_text(zoo_tok, text, [])
    assert finish == "length" and "".join(pieces) == text and len(pieces) > 1 and consumed == len(text)


def test_stream_text_holds_back_a_possible_stop(zoo_tok) -> None:
    finish, pieces, _, _ = run_text(zoo_tok, "abc wor wonder", ["world"])
    assert finish == "length" and "".join(pieces) == "abc wor wonder"
    joined = ""
    for p in pieces:  # a prefix of "world" at the end of the streamed text waits for the next character
        joined += p
        assert not joined.endswith(("w", "wo", "wor"))


def test_stream_text_stops_at_eos_without_showing_it(zoo_tok) -> None:
    finish, pieces, reported, consumed = run_text(zoo_tok, "abcdef", [], eos_after=3)
    assert finish == "stop" and "".join(pieces) == "abc" and consumed == 4 and len(reported) == 4
    _, _, reported, _ = run_text(zoo_tok, "abcdef", [], want_lp=False)
    assert reported == []


def test_logprob_shapes() -> None:
    tb = {5: b"a", 6: "é".encode()}.__getitem__
    step = TokenStep(6, -0.25, [(6, -0.25), (5, -2.0)])
    e = chat_logprob_entry(step, tb)
    assert e["token"] == "é" and e["bytes"] == list("é".encode()) and e["logprob"] == -0.25
    assert [t["token"] for t in e["top_logprobs"]] == ["é", "a"]
    lp, end = completion_logprobs([TokenStep(5, -1.0, [(5, -1.0)]), step], tb, 10)
    assert lp["tokens"] == ["a", "é"] and lp["text_offset"] == [10, 11] and end == 12
    assert lp["token_logprobs"] == [-1.0, -0.25] and lp["top_logprobs"][1] == {"é": -0.25, "a": -2.0}
