"""R2R over two remote members that stream (vLLM servers): the streamed protocol.

Both members are :class:`collab.protocol.StreamingTokenModel`\\ s. The loop keeps up to two speculative streams, each
a continuation of the answer from some position, read in a background task (:class:`SpecStream`):

- the **draft**: the small model streams tokens with top-k logprobs; the router scores each as it arrives; the
  small model's tokens are appended until the first flagged position. The stream is *not* cut at the flag: while
  the large model writes that position the draft goes on, and if the large model writes the same token the draft
  is still a valid continuation and is used on (otherwise it is cancelled — closing it makes vLLM abort it);
- the **large** stream: opened at a flagged position (a fresh call), or *before* a flag where one is likely
  (:func:`collab.remote_plan.should_prefire`), and left running after the position it was opened for: the next
  positions are often flagged too, and its tokens stay valid as long as every token written since agrees with it.
  At a flag, a large stream that has not reached the position yet is waited for or replaced by a fresh call
  (:func:`collab.remote_plan.wait_for_stream`, from running estimates of its time per token and a fresh call's
  first-token time).

So a draft costs one call per run of small-model tokens (not one per chunk), no drafted token is thrown away
except those the server wrote after the first disagreement, and a large-model position costs a fresh call only when
no stream is already on it. Each ``advance`` still appends tokens of one writer only (``R2RStrategy``'s rule).
Per-session counts go to ``session.scratch["stats"]`` (streams opened, prefired streams used, waits, fresh calls,
and summed latencies: each stream's first token and the gaps between its tokens, in ms).

Params (route ``params``, via ``R2RStrategy``): ``draft_run`` (tokens a draft stream asks for), ``large_run``
(tokens a large stream asks for), ``prefire`` (``never`` / ``near`` / ``always``) and ``prefire_tau`` (the
``near`` threshold). What it leaves out: in-process members (``collab.r2r``), sampling equivalence with the
one-call-at-a-time path at temperature > 0 (greedy output is the same token for token).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from collab.features import Signals, signals_from_top
from collab.protocol import TokenStep
from collab.remote_plan import Ewma, should_prefire, stream_agrees, wait_for_stream
from collab.session import Member, Session, position_seed


class R2RSettings(Protocol):
    """What the protocol reads from (and counts into) its strategy, ``collab.r2r.R2RStrategy``."""

    slm: str
    llm: str
    k: int
    tau: float
    draft_run: int
    large_run: int
    prefire: str
    prefire_tau: float
    positions: int
    routed: int

    def decide(self, signals: Signals) -> tuple[float | None, bool]:
        """The router's p at one position (None where τ alone decides) and whether the large model writes it."""
        ...


STATE = "r2r_remote"  # session.scratch key of this protocol's state


class SpecStream:
    """One member's streamed continuation of the answer from answer position ``start``, read in a background task.
    ``steps[i]`` is the token at position ``start + i``; ``arrivals[i]`` when it arrived."""

    def __init__(self, member: Member, start: int, ids: list[int], max_tokens: int, *, k: int,
                 stop_ids: list[int], temperature: float, seed: int | None, fresh: bool):
        self.model = member.name
        self.start = start
        self.opened = time.perf_counter()
        self.fresh = fresh  # opened at a flagged position (not ahead of one)
        self.steps: list[TokenStep] = []
        self.arrivals: list[float] = []
        self.ended = False
        self.error: BaseException | None = None
        self._more = asyncio.Event()
        self._task = asyncio.create_task(self._run(member, ids, max_tokens, k, stop_ids, temperature, seed))

    async def _run(self, member: Member, ids: list[int], max_tokens: int, k: int, stop_ids: list[int],
                   temperature: float, seed: int | None) -> None:
        try:
            async for step in member.stream(ids, max_tokens, top_logprobs=k, stop_ids=stop_ids,
                                            temperature=temperature, seed=seed):
                self.steps.append(step)
                self.arrivals.append(time.perf_counter())
                self._more.set()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - handed to whoever waits on this stream
            self.error = e
        finally:
            self.ended = True
            self._more.set()

    @property
    def reach(self) -> int:
        """The first answer position this stream has not delivered yet."""
        return self.start + len(self.steps)

    def agrees(self, output: list[int]) -> bool:
        return stream_agrees(self.start, [s.token_id for s in self.steps], output)

    async def step_at(self, pos: int) -> TokenStep | None:
        """The token at answer position ``pos`` (waiting for it); None if the stream ended before it."""
        while True:
            if pos < self.reach:
                return self.steps[pos - self.start]
            if self.ended:
                if self.error is not None:
                    raise self.error
                return None
            self._more.clear()
            await self._more.wait()

    def cancel(self) -> None:
        if not self._task.done():
            self._task.cancel()


class RemoteR2R:
    """The streamed protocol's state for one session (kept in ``session.scratch``)."""

    def __init__(self, strategy: R2RSettings, session: Session):
        self.s = strategy
        self.slm, self.llm = session.member(strategy.slm), session.member(strategy.llm)
        self.draft: SpecStream | None = None
        self.large: SpecStream | None = None
        self.decided: dict[int, tuple[float | None, bool]] = {}  # answer position → (router p, flagged)
        self.token_s = Ewma()  # the large stream's time per token
        self.fresh_s = Ewma()  # a fresh large call's time to its first token
        self.stats: dict[str, int] = {"draft_streams": 0, "large_streams": 0, "large_prefired": 0,
                                      "flags_from_open_stream": 0, "flags_fresh": 0, "waits": 0,
                                      "drafts_kept_through_flag": 0}
        session.scratch["stats"] = self.stats
        session.on_close(self.close)

    @classmethod
    def of(cls, strategy: R2RSettings, session: Session) -> RemoteR2R:
        state = session.scratch.get(STATE)
        if state is None:
            state = session.scratch[STATE] = cls(strategy, session)
        return state

    def close(self) -> None:
        for st in (self.draft, self.large):
            if st is not None:
                self._retire(st)
        self.draft = self.large = None

    def _retire(self, st: SpecStream) -> None:
        """Cancel a stream (if it still runs) and add its latencies to the stats: first token after opening, and
        the gaps between tokens (integer milliseconds, summed; ``*_n`` counts)."""
        st.cancel()
        if st.model == self.llm.name:
            self._learn(st)
        who = "large" if st.model == self.llm.name else "draft"
        if st.arrivals:
            self._add(f"{who}_first_token", st.arrivals[0] - st.opened)
            for a, b in zip(st.arrivals, st.arrivals[1:]):
                self._add(f"{who}_token_gap", b - a)

    def _add(self, key: str, seconds: float) -> None:
        self.stats[f"{key}_ms_sum"] = self.stats.get(f"{key}_ms_sum", 0) + round(seconds * 1000)
        self.stats[f"{key}_n"] = self.stats.get(f"{key}_n", 0) + 1

    # ---- streams -------------------------------------------------------------------------------------------

    def _open(self, session: Session, member: Member, n: int, *, fresh: bool = False) -> SpecStream:
        pos = len(session.output)
        seed = position_seed(session.seed, len(session.ids)) if session.temperature else None
        return SpecStream(member, pos, session.ids, n, k=self.s.k, stop_ids=sorted(session.stop_ids),
                          temperature=session.temperature, seed=seed, fresh=fresh)

    def _sync(self, output: list[int]) -> None:
        """Drop streams that no longer continue the answer (cancelled on the server)."""
        if self.draft is not None and not self.draft.agrees(output):
            self._retire(self.draft)
            self.draft = None
        if self.large is not None and not self.large.agrees(output):
            self._retire(self.large)
            self.large = None

    def _learn(self, st: SpecStream) -> None:
        if st.fresh and st.arrivals:
            self.fresh_s.add(st.arrivals[0] - st.opened)
        for a, b in zip(st.arrivals, st.arrivals[1:]):
            self.token_s.add(b - a)

    def _large_usable(self, pos: int) -> bool:
        return self.large is not None and not (self.large.ended and self.large.reach <= pos)

    def _decide(self, pos: int, step: TokenStep) -> tuple[float | None, bool]:
        got = self.decided.get(pos)
        if got is None:
            got = self.decided[pos] = self.s.decide(signals_from_top(step.top, step.token_id, step.logprob, self.s.k))
        return got

    async def _large_token(self, session: Session, pos: int, budget: int) -> int:
        st = self.large
        if st is not None and self._large_usable(pos):
            gap = pos - st.reach + 1
            if wait_for_stream(gap, self.token_s.value, self.fresh_s.value):
                if gap > 0:
                    self.stats["waits"] += 1
                step = await st.step_at(pos)
                # the tokens it delivered while we waited must still be the answer's, else its token is not ours
                if step is not None and st.agrees(session.output):
                    self.stats["flags_from_open_stream"] += 1
                    return step.token_id
        if st is not None:
            self._retire(st)
        self.stats["flags_fresh"] += 1
        self.stats["large_streams"] += 1
        self.large = self._open(session, self.llm, min(self.s.large_run, budget), fresh=True)
        step = await self.large.step_at(pos)
        if step is None:
            raise RuntimeError(f"model '{self.llm.name}' wrote no token")
        return step.token_id

    # ---- one advance ---------------------------------------------------------------------------------------

    async def advance(self, session: Session, budget: int) -> None:
        end = len(session.output) + budget
        wrote_small = False
        while not session.done and len(session.output) < end:
            pos = len(session.output)
            self._sync(session.output)
            if self.s.tau <= 0:  # every position is the large model's: no draft to wait for
                self.s.positions += 1
                self.s.routed += 1
                session.append(await self._large_token(session, pos, end - pos), self.llm.name)
                break
            if self.draft is None or (self.draft.ended and self.draft.reach <= pos):
                if self.draft is not None:
                    self._retire(self.draft)
                self.stats["draft_streams"] += 1
                self.draft = self._open(session, self.slm, min(self.s.draft_run, end - pos))
                last = self.decided.get(pos - 1, (None, False))[0]
                if should_prefire(self.s.prefire, last, self.s.tau, self.s.prefire_tau, self._large_usable(pos)):
                    self._prefire(session, end - pos)
            step = await self.draft.step_at(pos)
            if step is None:  # ended before this position (its length): open a new one
                self._retire(self.draft)
                self.draft = None
                continue
            p, flagged = self._decide(pos, step)
            if flagged:
                if wrote_small:
                    return  # one writer per advance: the next one writes this position
                tok = await self._large_token(session, pos, end - pos)
                session.append(tok, self.llm.name)
                if tok == step.token_id:
                    self.stats["drafts_kept_through_flag"] += 1
                break
            session.append(step.token_id, self.slm.name)
            wrote_small = True
            if should_prefire(self.s.prefire, p, self.s.tau, self.s.prefire_tau, self._large_usable(pos + 1)):
                self._sync(session.output)
                if not self._large_usable(pos + 1):
                    self._prefire(session, end - pos - 1)
        if session.done or len(session.output) >= end:  # the answer is complete: stop what still runs
            self.close()

    def _prefire(self, session: Session, budget: int) -> None:
        if budget <= 0 or session.done:
            return
        if self.large is not None:
            self._retire(self.large)
        self.stats["large_streams"] += 1
        self.stats["large_prefired"] += 1
        self.large = self._open(session, self.llm, min(self.s.large_run, budget))


async def advance_streamed(strategy: R2RSettings, session: Session, budget: int) -> None:
    """One ``advance`` of R2R over two streaming remote members (see the module docstring)."""
    await RemoteR2R.of(strategy, session).advance(session, budget)
