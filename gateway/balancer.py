"""Deployments: several backends of one model behind one route, and the strategies that pick one per request.

A route with ``deployments`` has a :class:`Balancer` over one :class:`ReplicaState` per deployment. Each strategy
is a pure function of the replicas' states, the replicas to leave out (cooling or already failed for this request)
and, where it draws at random, a uniform number ``u`` in [0, 1) — so it is tested against a reference without
mocks, and the :class:`Balancer` only supplies the random numbers (a seedable ``random.Random``) and the words:

* ``weighted`` (:func:`pick_weighted`): weighted random.
* ``least-inflight`` (:func:`pick_least_inflight`): fewest requests in flight; ties by weighted random.
* ``latency`` (:func:`pick_latency`): lowest recent latency, an EWMA per replica (:data:`LATENCY_ALPHA`) of an
  attempt's seconds (the whole call when not streamed, the wait for the first event when streamed); a replica not
  measured yet is tried first (weighted random among those).
* ``prefix`` (:func:`pick_prefix`): prefix affinity. The key is a 64-bit hash of the first ``prefix_chars``
  characters of the prompt (:func:`prompt_prefix`: role and text of each message in order, or a completion's
  prompt), so requests sharing a prompt prefix reach the replica that holds it in its KV cache. Replicas are ranked
  by weighted rendezvous (highest-random-weight) hashing (:func:`rendezvous_order`): adding or removing one of n
  replicas moves only about 1/n of the keys. Bounded load: a replica whose in-flight count has reached
  ``ceil(load_factor × (in flight + 1) × its weight share)`` — for equal weights, ``load_factor`` × the mean — is
  passed over for the next on its ranking, so one hot prefix cannot swamp a replica (:data:`DEFAULT_LOAD_FACTOR`,
  the bound of Mirrokni, Thorup and Zadimoghaddam's consistent hashing with bounded loads).

What holds across gateway replicas: the prefix ranking is a function of the request and of the deployments' names
(hashed with BLAKE2b, never Python's salted ``hash``), so every gateway process sends a prefix to the same replica.
In-flight counts and latencies are this process's own (the bounded-load test and ``least-inflight`` see only this
process's requests); cooldowns are shared through Redis by ``gateway.cooldown`` and dispatch leaves cooling replicas
out. What it leaves out: calling backends, retries and cooldowns (``gateway.dispatch``), the config
(``gateway.config.BackendRouteConfig``).
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Literal

Strategy = Literal["weighted", "least-inflight", "latency", "prefix"]
STRATEGIES: tuple[str, ...] = ("weighted", "least-inflight", "latency", "prefix")
LATENCY_ALPHA = 0.3
"""Weight of the newest measurement in a replica's latency EWMA."""
DEFAULT_LOAD_FACTOR = 1.25
"""``prefix``'s bound: a replica takes at most this many times its share of the requests in flight."""
DEFAULT_PREFIX_CHARS = 256
"""Characters of the prompt that make the ``prefix`` key."""

_M64 = (1 << 64) - 1


def hash64(text: str) -> int:
    """A 64-bit hash that is the same in every process (BLAKE2b)."""
    return int.from_bytes(blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: a key and a replica's hash combined into one well-spread 64-bit number."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _M64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _M64
    return x ^ (x >> 31)


@dataclass(slots=True)
class ReplicaState:
    """One deployment as the strategies see it; ``inflight`` and ``latency_s`` are this process's own."""

    name: str
    """The backend serving this deployment."""
    weight: float = 1.0
    """Relative share of traffic (> 0)."""
    inflight: int = 0
    """Requests this process has on it now (a stream counts until it ends)."""
    latency_s: float | None = None
    """EWMA of its attempts' seconds; None until one succeeded."""
    key: int = 0
    """:func:`hash64` of ``name`` (set by :meth:`of`)."""

    @classmethod
    def of(cls, name: str, weight: float = 1.0) -> ReplicaState:
        return cls(name, weight, key=hash64(name))

    def observe(self, seconds: float) -> None:
        """Fold one successful attempt's seconds into the latency EWMA."""
        prev = self.latency_s
        self.latency_s = seconds if prev is None else prev + LATENCY_ALPHA * (seconds - prev)


Replicas = Sequence[ReplicaState]

# ---------------------------------------------------------------------------------------------------- pure rules


def _weighted_among(replicas: Replicas, among: Sequence[int], u: float) -> int:
    """The index in ``among`` that ``u`` falls on when [0, 1) is cut in proportion to their weights."""
    total = sum(replicas[i].weight for i in among)
    target = u * total
    for i in among:
        target -= replicas[i].weight
        if target < 0:
            return i
    return among[-1]  # u * total rounded up to total


def allowed(replicas: Replicas, exclude: Collection[int]) -> list[int]:
    """The indices of the replicas not in ``exclude``."""
    return [i for i in range(len(replicas)) if i not in exclude]


def pick_weighted(replicas: Replicas, exclude: Collection[int], u: float) -> int:
    """Weighted random: replica i with probability weight_i / Σ weight over the allowed ones; -1 when none is."""
    among = allowed(replicas, exclude)
    return _weighted_among(replicas, among, u) if among else -1


def pick_least_inflight(replicas: Replicas, exclude: Collection[int], u: float) -> int:
    """The allowed replica with the fewest requests in flight; ties by weighted random; -1 when none is allowed."""
    among = allowed(replicas, exclude)
    if not among:
        return -1
    low = min(replicas[i].inflight for i in among)
    ties = [i for i in among if replicas[i].inflight == low]
    return ties[0] if len(ties) == 1 else _weighted_among(replicas, ties, u)


def pick_latency(replicas: Replicas, exclude: Collection[int], u: float) -> int:
    """An allowed replica not measured yet (weighted random among those), else the one with the lowest latency EWMA
    (the first of equals); -1 when none is allowed."""
    among = allowed(replicas, exclude)
    if not among:
        return -1
    fresh = [i for i in among if replicas[i].latency_s is None]
    if fresh:
        return _weighted_among(replicas, fresh, u)
    return min(among, key=lambda i: replicas[i].latency_s)  # type: ignore[arg-type, return-value]  # all measured


def rendezvous_order(replicas: Replicas, key: int, among: Sequence[int]) -> list[int]:
    """``among`` ranked for ``key`` by weighted rendezvous hashing: score_i = weight_i / -ln(h_i), h_i in (0, 1) a
    hash of (key, replica); highest first. A replica's rank depends only on its own score, so adding one moves only
    the keys it wins (about weight / Σ weight of them)."""

    def score(i: int) -> float:
        h = ((_mix64(key ^ replicas[i].key) >> 11) + 0.5) / (1 << 53)
        return replicas[i].weight / -math.log(h)

    return sorted(among, key=score, reverse=True)


def load_bound(replicas: Replicas, i: int, among: Sequence[int], load_factor: float) -> int:
    """The most requests replica i may have in flight before ``prefix`` passes it over:
    ``ceil(load_factor × (Σ in flight + 1) × weight_i / Σ weight)`` over the allowed replicas (the +1 is the request
    being placed, so an idle replica always takes it)."""
    total = sum(replicas[j].inflight for j in among)
    weights = sum(replicas[j].weight for j in among)
    return math.ceil(load_factor * (total + 1) * replicas[i].weight / weights)


def pick_prefix(replicas: Replicas, exclude: Collection[int], key: int,
                load_factor: float = DEFAULT_LOAD_FACTOR) -> tuple[int, int]:
    """Prefix affinity with bounded load: ``(chosen, owner)``, the owner being the key's first replica on the
    rendezvous ranking and the chosen one the first on that ranking below its :func:`load_bound` (the owner when all
    are at their bound). ``(-1, -1)`` when none is allowed."""
    among = allowed(replicas, exclude)
    if not among:
        return -1, -1
    order = rendezvous_order(replicas, key, among)
    for i in order:
        if replicas[i].inflight < load_bound(replicas, i, among, load_factor):
            return i, order[0]
    return order[0], order[0]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text, in order
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return ""


def prompt_prefix(messages: Sequence[dict[str, Any]] | None, prompt: str | list[int] | None, chars: int) -> str:
    """The first ``chars`` characters of the rendered prompt: each message's role and text in order (chat), or the
    completion's prompt (token ids written out as numbers)."""
    if messages is None:
        if isinstance(prompt, str):
            return prompt[:chars]
        return ",".join(map(str, (prompt or [])[:chars]))[:chars]
    parts: list[str] = []
    have = 0
    for m in messages:
        piece = f"{m.get('role', '')}\x1f{_text_of(m.get('content'))}\x1e"
        parts.append(piece)
        have += len(piece)
        if have >= chars:
            break
    return "".join(parts)[:chars]


# ---------------------------------------------------------------------------------------------------- the balancer


class Balancer:
    """A deployments route's replicas and strategy. :meth:`choose` picks one (and says why); dispatch updates the
    chosen replica's ``inflight`` and latency around the call."""

    def __init__(self, replicas: Sequence[tuple[str, float]], strategy: Strategy = "weighted", *,
                 load_factor: float = DEFAULT_LOAD_FACTOR, prefix_chars: int = DEFAULT_PREFIX_CHARS,
                 seed: int | None = None) -> None:
        if not replicas:
            raise ValueError("a balancer needs at least one replica")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
        self.replicas = [ReplicaState.of(name, weight) for name, weight in replicas]
        self.strategy = strategy
        self.load_factor = load_factor
        self.prefix_chars = prefix_chars
        self._random = random.Random(seed).random

    def request_key(self, messages: Sequence[dict[str, Any]] | None, prompt: str | list[int] | None) -> int:
        """The ``prefix`` key of a request (0 for the other strategies, which need none)."""
        if self.strategy != "prefix":
            return 0
        return hash64(prompt_prefix(messages, prompt, self.prefix_chars))

    def choose(self, key: int, exclude: Collection[int] = ()) -> tuple[int, str] | None:
        """The replica for a request with ``key`` (:meth:`request_key`) among those not in ``exclude``, and why in
        words; None when all are excluded."""
        reps = self.replicas
        s = self.strategy
        if s == "prefix":
            i, owner = pick_prefix(reps, exclude, key, self.load_factor)
            if i < 0:
                return None
            if i == owner:
                return i, "prefix owner"
            return i, (f"prefix owner {reps[owner].name} at its load bound ({reps[owner].inflight} in flight): "
                       "next on the ring")
        if s == "weighted":
            i = pick_weighted(reps, exclude, self._random())
            if i < 0:
                return None
            return i, f"weighted random (weight {reps[i].weight:g})"
        if s == "least-inflight":
            i = pick_least_inflight(reps, exclude, self._random())
            return None if i < 0 else (i, f"fewest in flight ({reps[i].inflight})")
        i = pick_latency(reps, exclude, self._random())
        if i < 0:
            return None
        lat = reps[i].latency_s
        return i, "not measured yet" if lat is None else f"lowest recent latency ({lat * 1000:.1f} ms)"


class HeldStream(AsyncGenerator):
    """A replica's stream that keeps the replica's in-flight count until the stream ends, fails or is closed (or
    is dropped unclosed). Everything else is the wrapped stream's."""

    __slots__ = ("_it", "_state")

    def __init__(self, it: AsyncGenerator[Any, None], state: ReplicaState) -> None:
        self._it = it
        self._state: ReplicaState | None = state

    def _release(self) -> None:
        st, self._state = self._state, None
        if st is not None:
            st.inflight -= 1

    async def __anext__(self) -> Any:
        try:
            return await self._it.__anext__()
        except BaseException:
            self._release()
            raise

    async def asend(self, value: Any) -> Any:
        try:
            return await self._it.asend(value)
        except BaseException:
            self._release()
            raise

    async def athrow(self, *args: Any) -> Any:
        try:
            return await self._it.athrow(*args)
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        try:
            await self._it.aclose()
        finally:
            self._release()

    def __del__(self) -> None:
        self._release()
