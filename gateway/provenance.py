"""Which model wrote which part of an answer, as the request log keeps it (``requests.provenance``) and the
operator's page shows it: ``[{"model": name, "text": piece}, …]`` runs in order, consecutive pieces of one model
merged into one run, empty pieces dropped, whose texts concatenate to the logged response text.

Rules:

* A plain backend's answer has no runs (None): ``model_chosen`` wrote all of it. Runs exist when the answer says who
  wrote its pieces: a collaboration's ``ChatResult.provenance`` (non-streamed), its stream events' ``model``
  (streamed), or a cached answer's stored runs (a cache hit).
* Runs that do not concatenate to the response text they describe are not kept (None): a log row never holds a
  colouring of some other text.
* In a stream, a piece that names no writer among pieces that do is credited to the route's chosen model, so that the
  runs still cover the whole text.

All functions here are pure. What it leaves out: storing the runs (``gateway.storage.request_log``), gathering them
while a request runs (``gateway.pipeline``) and drawing them (``gateway/ui/ui.js``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Run = dict[str, str]


def _add(runs: list[Run], model: str, text: str) -> None:
    if not text:
        return
    if runs and runs[-1]["model"] == model:
        runs[-1]["text"] += text
    else:
        runs.append({"model": model, "text": text})


def merged_runs(runs: Any) -> list[Run] | None:
    """``runs`` as well-formed runs (each ``{"model": str, "text": str}``; neighbours of one model merged, empty
    texts dropped); None when there are none or any entry is malformed."""
    if not isinstance(runs, list | tuple) or not runs:
        return None
    out: list[Run] = []
    for r in runs:
        if not isinstance(r, dict) or not isinstance(r.get("model"), str) or not isinstance(r.get("text"), str):
            return None
        _add(out, r["model"], r["text"])
    return out or None


def runs_for(text: str | None, runs: Any) -> list[Run] | None:
    """The runs of an answer whose text is ``text``: :func:`merged_runs`, kept only when they concatenate to it."""
    if not isinstance(text, str) or not text:
        return None
    out = merged_runs(runs)
    if out is None or "".join(r["text"] for r in out) != text:
        return None
    return out


def runs_from_pieces(pieces: Sequence[str], writers: Sequence[tuple[int, str]], fallback: str) -> list[Run] | None:
    """Runs of a streamed answer: ``pieces`` are its content pieces in order, ``writers`` the ``(piece index,
    model)`` of each piece that named its writer (None when none did: a plain backend's stream); unnamed pieces are
    credited to ``fallback``."""
    if not writers:
        return None
    named = dict(writers)
    out: list[Run] = []
    for i, piece in enumerate(pieces):
        _add(out, named.get(i, fallback), piece)
    return out or None


def cut_runs(runs: list[Run] | None, cap: int) -> list[Run] | None:
    """The runs of the first ``cap`` characters of their text (the page cuts the response there too)."""
    if runs is None:
        return None
    out: list[Run] = []
    left = cap
    for r in runs:
        if left <= 0:
            break
        piece = r["text"][:left]
        out.append({"model": r["model"], "text": piece})
        left -= len(piece)
    return out or None


__all__ = ["Run", "cut_runs", "merged_runs", "runs_for", "runs_from_pieces"]
