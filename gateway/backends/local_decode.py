"""Decoding helpers for the in-process backend: everything between next-token logits and OpenAI-shaped text, pure
of the model and its KV cache.

Sampling (:func:`pick_token`: greedy at temperature 0/None, else temperature + top-p from a seeded generator),
top-k logprobs, the chat prompt (:func:`render_chat`: the tokenizer's chat template), incremental detokenization
(:class:`IncrementalDecoder`), the bytes each token stands for (:class:`TokenBytes`, for logprob entries), stop
strings (:func:`find_stop`, :func:`held_back`) and the text loop that applies them to a stream of tokens
(:func:`stream_text`), and the OpenAI logprob shapes for chat and completions. What it leaves out: forward passes and
the KV cache (``gateway.backends.local``, ``collab.prefix_cache``), loading (``gateway.backends.local_model``),
tools, and repetition/frequency penalties.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from collab.protocol import TokenStep
from gateway.errors import InvalidRequest

MAX_TOP_LOGPROBS = 20


# ---- sampling and logprobs ---------------------------------------------------------------------------------------


def top_p_filter(probs: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p`` (at least one); renormalize."""
    if top_p is None or top_p >= 1.0:
        return probs
    sorted_p, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_p, 0) - sorted_p  # mass strictly before each token
    keep_sorted = before < top_p
    keep_sorted[0] = True
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[keep_sorted]] = True
    out = torch.where(keep, probs, torch.zeros_like(probs))
    return out / out.sum()


def pick_token(logits: torch.Tensor, temperature: float | None, top_p: float | None,
               generator: torch.Generator | None) -> int:
    """Greedy at temperature 0/None; else sample from softmax(logits / T), top-p filtered. ``logits``: [V] float32."""
    if not temperature:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    probs = top_p_filter(probs, top_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def top_logprobs(logprobs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely (id, logprob), best first."""
    if k <= 0:
        return []
    vals, idx = torch.topk(logprobs, min(k, logprobs.numel()))
    return [(int(i), float(v)) for i, v in zip(idx.tolist(), vals.tolist(), strict=True)]


def check_top_logprobs(k: int | None) -> int:
    """``k`` as an int in ``[0, MAX_TOP_LOGPROBS]`` (None → 0); else a 400."""
    k = int(k or 0)
    if not 0 <= k <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs")
    return k


# ---- prompts -----------------------------------------------------------------------------------------------------


def message_text(content: Any) -> str:
    """The text of an OpenAI message ``content`` (a string, or the text parts of a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join((p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return str(content)


def render_chat(tok: Any, messages: list[dict[str, Any]]) -> list[int]:
    """Prompt ids for a chat: the tokenizer's chat template with the generation prompt (a plain ``role: text``
    layout when the tokenizer has no template)."""
    msgs = [{"role": m.get("role", "user"), "content": message_text(m.get("content"))} for m in messages]
    if getattr(tok, "chat_template", None):
        out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(out, dict) or hasattr(out, "input_ids"):
            out = out["input_ids"]
        return [int(x) for x in out]
    text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
    return [int(x) for x in tok(text, add_special_tokens=False)["input_ids"]]


# ---- tokens to text and bytes ------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte ↔ printable-character map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def byte_level_decoder(tok: Any) -> dict[str, int] | None:
    """Character → byte map when the tokenizer is byte-level BPE (its decoder says ``ByteLevel``), else None."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        dec = json.loads(backend.to_str()).get("decoder")
    except Exception:
        return None
    if dec is not None and "ByteLevel" in json.dumps(dec):
        return {c: b for b, c in bytes_to_unicode().items()}
    return None


class TokenBytes:
    """The bytes one token stands for (byte-level BPE, ``<0xNN>`` byte tokens, else its decoded text), memoised."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.byte_decoder = byte_level_decoder(tokenizer)
        self._memo: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        b = self._memo.get(token_id)
        if b is None:
            s = self.tok.convert_ids_to_tokens(token_id)
            m = _BYTE_TOKEN.match(s or "")
            if m:
                b = bytes([int(m.group(1), 16)])
            elif self.byte_decoder is not None and s and all(c in self.byte_decoder for c in s):
                b = bytes(self.byte_decoder[c] for c in s)
            else:
                b = self.tok.decode([token_id], skip_special_tokens=False).encode()
            self._memo[token_id] = b
        return b


class IncrementalDecoder:
    """Turns generated ids into text pieces one token at a time; a piece is held while it ends in an incomplete
    UTF-8 sequence, and merged pieces (leading spaces, multi-byte characters) come out as the full decode would."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """What is left at the end (an incomplete character comes out as U+FFFD)."""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):]


# ---- stop strings and the text loop ------------------------------------------------------------------------------


def find_stop(text: str, stops: Sequence[str], search_from: int = 0) -> int | None:
    """Index of the earliest stop string in ``text`` starting at or after ``search_from`` (None: none)."""
    hits = [i for s in stops if s and (i := text.find(s, search_from)) >= 0]
    return min(hits) if hits else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string (must not be streamed
    yet: the next token may complete the stop string)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def stream_text(steps: Iterable[TokenStep], tokenizer: Any, eos_ids: set[int], stops: list[str], want_lp: bool,
                emit: Callable[[str, list[TokenStep]], None]) -> str:
    """Turn generated tokens into streamed text: ``emit(piece, steps)`` for each piece that is safe to send
    (``steps``: the tokens not yet reported, kept only when ``want_lp``). Ends at an EOS id (not shown), at the first
    stop string (cut off, never streamed) or when ``steps`` runs out; returns the finish reason, ``"stop"`` or
    ``"length"``. ``steps`` is consumed lazily: nothing after the stop is asked for."""
    dec = IncrementalDecoder(tokenizer)
    text, emitted = "", 0
    pending: list[TokenStep] = []
    finish = "length"
    max_stop = max((len(s) for s in stops), default=0)
    for step in steps:
        if want_lp:
            pending.append(step)
        if step.token_id in eos_ids:
            finish = "stop"
            break
        before = len(text)
        text += dec.push(step.token_id)
        if len(text) == before:
            continue  # no visible text yet (a special token, or an incomplete character)
        if stops:
            at = find_stop(text, stops, max(0, before - max_stop + 1))
            if at is not None:
                finish = "stop"
                text = text[:at]
                break
        safe = len(text) - held_back(text, stops) if stops else len(text)
        if safe > emitted:
            emit(text[emitted:safe], pending)
            emitted, pending = safe, []
    else:
        text += dec.flush()
        if stops:
            at = find_stop(text, stops, max(0, emitted - max_stop + 1))
            if at is not None:
                finish, text = "stop", text[:at]
    if len(text) > emitted or pending:
        emit(text[emitted:], pending)
    return finish


# ---- OpenAI logprob shapes ---------------------------------------------------------------------------------------


def chat_logprob_entry(step: TokenStep, token_bytes: Callable[[int], bytes]) -> dict[str, Any]:
    """One ``choices[].logprobs.content[]`` entry: token, logprob, bytes and the top alternatives."""
    def one(tid: int, lp: float) -> dict[str, Any]:
        b = token_bytes(tid)
        return {"token": b.decode("utf-8", errors="replace"), "logprob": lp, "bytes": list(b)}

    e = one(step.token_id, step.logprob)
    e["top_logprobs"] = [one(t, lp) for t, lp in step.top]
    return e


def completion_logprobs(steps: list[TokenStep], token_bytes: Callable[[int], bytes], offset: int
                        ) -> tuple[dict[str, list[Any]], int]:
    """The ``/v1/completions`` logprobs of ``steps`` (tokens, token_logprobs, top_logprobs, text_offset), the first
    token at text offset ``offset``; returns them and the offset after the last token."""
    toks = [token_bytes(s.token_id).decode("utf-8", errors="replace") for s in steps]
    offsets = []
    for t in toks:
        offsets.append(offset)
        offset += len(t)
    lp = {
        "tokens": toks,
        "token_logprobs": [s.logprob for s in steps],
        "top_logprobs": [{token_bytes(t).decode("utf-8", errors="replace"): v for t, v in s.top} for s in steps],
        "text_offset": offsets,
    }
    return lp, offset
