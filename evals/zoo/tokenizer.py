"""The zoo's shared tokenizer: one token per printable ASCII character, built deterministically, saved as an HF folder.

Every model in the zoo uses this tokenizer, so they can collaborate token by token. It is character level with no
merges: each printable ASCII character (space through ``~``) and ``"\\n"`` is one token; a character outside that set
becomes ``<|unk|>``. The special tokens come first (``<|pad|>``=0, ``<|bos|>``=1, ``<|end|>``=2 — the EOS — then
``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|unk|>``) and reserved specials pad the vocabulary to 128.
No BOS is added automatically: ``encode(s)`` is exactly the characters of ``s``, and ``decode(encode(s)) == s``.

:func:`build_tokenizer` writes ``tokenizer.json``, ``tokenizer_config.json`` (with a Jinja chat template) and
``special_tokens_map.json``; both ``transformers.AutoTokenizer`` and vLLM load the folder. The chat format is::

    <|system|>You are terse.<|end|>\\n<|user|>Hi<|end|>\\n<|assistant|>Hello<|end|>\\n

and with ``add_generation_prompt`` the prompt ends with ``<|assistant|>``; the model ends its reply with ``<|end|>``.

What it leaves out: training models (``evals.zoo`` trainers) and Unicode (anything non-ASCII is ``<|unk|>``).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models

PAD, BOS, END, SYSTEM, USER, ASSISTANT, UNK = (
    "<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|unk|>",
)
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, END, SYSTEM, USER, ASSISTANT, UNK)
PAD_ID, BOS_ID, END_ID, SYSTEM_ID, USER_ID, ASSISTANT_ID, UNK_ID = range(len(SPECIAL_TOKENS))
EOS_ID = END_ID
VOCAB_SIZE = 128

# Printable ASCII (space .. ~) and the newline, in code-point order after the special tokens.
CHARS: tuple[str, ...] = ("\n",) + tuple(chr(c) for c in range(0x20, 0x7F))
FIRST_CHAR_ID = len(SPECIAL_TOKENS)
N_RESERVED = VOCAB_SIZE - len(SPECIAL_TOKENS) - len(CHARS)

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}<|system|>"
    "{%- elif message['role'] == 'assistant' -%}<|assistant|>"
    "{%- else -%}<|user|>{%- endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- elif message['content'] -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def vocabulary() -> dict[str, int]:
    """Token → id for the whole vocabulary (specials, characters, reserved), ids 0..VOCAB_SIZE-1."""
    tokens = list(SPECIAL_TOKENS) + list(CHARS) + [f"<|reserved_{i}|>" for i in range(N_RESERVED)]
    assert len(tokens) == VOCAB_SIZE
    return {t: i for i, t in enumerate(tokens)}


def special_token_strings() -> list[str]:
    """Every special token (named and reserved), in id order."""
    vocab = vocabulary()
    return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t.startswith("<|")]


def make_tokenizer() -> Tokenizer:
    """The tokenizer object itself (no files): BPE with single-character vocabulary and no merges."""
    vocab = vocabulary()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    # No normalizer, no pre-tokenizer: the whole text is split into characters. Fuse joins pieces with no spaces.
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_token_strings()])
    return tok


def build_tokenizer(out_dir: str | Path) -> Path:
    """Write the zoo tokenizer as an HF tokenizer folder into ``out_dir`` (created if missing); return the path.

    Deterministic: the same files every time."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_tokenizer().save(str(out / "tokenizer.json"))
    vocab = vocabulary()
    added = {
        str(vocab[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True}
        for t in special_token_strings()
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "eos_token": END,
        "pad_token": PAD,
        "unk_token": UNK,
        "additional_special_tokens": [SYSTEM, USER, ASSISTANT],
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 20,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    special_map = {
        "bos_token": BOS, "eos_token": END, "pad_token": PAD, "unk_token": UNK,
        "additional_special_tokens": [SYSTEM, USER, ASSISTANT],
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, sort_keys=True) + "\n")
    return out


def encode(text: str) -> list[int]:
    """Reference encoder, no library: one id per character; characters outside the set are ``UNK_ID``.

    (Special-token strings inside ``text`` are *not* recognised here; the library tokenizer does recognise them.)"""
    vocab = vocabulary()
    return [vocab.get(ch, UNK_ID) if ch in CHARS else UNK_ID for ch in text]


def decode(ids: list[int], *, skip_special: bool = True) -> str:
    """Reference decoder, no library: characters joined; special ids dropped (or kept as their strings)."""
    inv = {i: t for t, i in vocabulary().items()}
    return "".join(inv[i] for i in ids if not (skip_special and inv[i].startswith("<|")))
