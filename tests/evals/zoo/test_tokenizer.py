"""The zoo tokenizer: round trips, special ids, the chat template, and loading through transformers."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

from evals.zoo import tokenizer as zt


@pytest.fixture(scope="module")
def hf_tok(zoo_tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(zoo_tokenizer_dir)


def _random_text(rng: random.Random, n: int) -> str:
    alphabet = string.printable.replace("\t", "").replace("\r", "").replace("\x0b", "").replace("\x0c", "")
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_vocabulary_layout():
    vocab = zt.vocabulary()
    assert len(vocab) == zt.VOCAB_SIZE == 128
    assert sorted(vocab.values()) == list(range(128))
    assert (vocab["<|pad|>"], vocab["<|bos|>"], vocab["<|end|>"]) == (0, 1, 2)
    assert vocab["<|unk|>"] == zt.UNK_ID and zt.EOS_ID == zt.END_ID == 2
    for c in range(0x20, 0x7F):
        assert chr(c) in vocab
    assert "\n" in vocab


def test_library_matches_reference_encoder(hf_tok):
    rng = random.Random(0)
    for n in (0, 1, 7, 200):
        s = _random_text(rng, n)
        ids = hf_tok.encode(s, add_special_tokens=True)
        assert ids == zt.encode(s)
        assert len(ids) == len(s)
        assert hf_tok.decode(ids) == s == zt.decode(ids)


@pytest.mark.parametrize("s", ["  two  leading spaces", "trailing  \n\n", " ", "\n", "a b\nc  d ", "~`!@#$%^&*()_+{}|"])
def test_spaces_and_newlines_survive(hf_tok, s: str):
    ids = hf_tok.encode(s)
    assert len(ids) == len(s)
    assert hf_tok.decode(ids) == s
    # Decoding one token at a time gives the same characters (incremental detokenizers do this).
    assert "".join(hf_tok.decode([i]) for i in ids) == s


def test_special_ids_and_unknowns(hf_tok):
    assert (hf_tok.pad_token_id, hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.unk_token_id) == (
        zt.PAD_ID, zt.BOS_ID, zt.END_ID, zt.UNK_ID)
    assert hf_tok.encode("a<|end|>b") == [zt.encode("a")[0], zt.END_ID, zt.encode("b")[0]]
    assert hf_tok.decode(hf_tok.encode("a<|end|>b"), skip_special_tokens=True) == "ab"
    assert hf_tok.encode("é") == [zt.UNK_ID]
    assert len(hf_tok) == 128


def test_chat_template(hf_tok):
    msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "2+2?"}]
    text = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|system|>Be terse.<|end|>\n<|user|>Hi there<|end|>\n<|assistant|>Yo<|end|>\n<|user|>2+2?<|end|>\n<|assistant|>"
    no_gen = hf_tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=False)
    assert no_gen == "<|system|>Be terse.<|end|>\n<|user|>Hi there<|end|>\n"
    ids = hf_tok.encode(text)
    assert ids[0] == zt.SYSTEM_ID and ids[-1] == zt.ASSISTANT_ID
    assert ids.count(zt.END_ID) == 4
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert hf_tok.apply_chat_template(parts, tokenize=False, add_generation_prompt=True) == "<|user|>ab<|end|>\n<|assistant|>"


def test_build_is_deterministic(tmp_path: Path, zoo_tokenizer_dir: Path):
    again = zt.build_tokenizer(tmp_path / "again")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (again / f).read_bytes() == (zoo_tokenizer_dir / f).read_bytes()
    cfg = json.loads((again / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<|end|>" and "chat_template" in cfg
