"""Replay data: per-prompt, per-model scores and costs, loaded from the formats in ../shared/data.

A ``ScoreMatrix`` holds, for n prompts and m models, the text to route on, each model's score in [0, 1] (NaN where
missing — never 0) and its dollar cost, plus a category per prompt. Replay evaluation uses the recorded score and
cost of the chosen model in place of a live call.

Loaders:
- ``load_routerbench(path)`` — RouterBench CSV (``prompt`` as a Python-list string of turns, ``MODEL`` score columns,
  ``MODEL|total_cost``, ``MODEL|model_response``, ``oracle_model_to_route_to``, ``sample_id``, ``eval_name``).
- ``load_routellm_gsm8k(path)`` / ``load_routellm_mmlu(dir)`` — RouteLLM's GPT-4-1106 vs Mixtral-8x7B correctness
  files. They carry no costs; costs are estimated from LiteLLM's bundled per-token prices and a token estimate of
  the text (see ``estimate_tokens``).
- ``load_jsonl(path)`` — this project's own format, one JSON object per line::

      {"id": "q1", "prompt": "text", "category": "math",            # id and category optional
       "models": {"model-a": {"score": 1.0, "cost": 0.0004}, ...}}  # score in [0, 1] or null, cost in USD or null

- ``load_any(path)`` — picks the loader from the file's format (a directory: MMLU files or several RouterBench CSVs).

Prompt text: the LAST turn of the conversation; when all prompts of a category share a long few-shot prefix
(RouterBench ARC-Challenge and Winogrande share ~1,200–1,650 characters), that prefix is cut at its last blank line,
so what remains is the question itself (``strip_shared_prefix``).

Left out: model responses (not kept), live calls, splitting into train/test (callers do that with ``subset``).
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ROUTELLM_PRICE_KEYS",
    "ScoreMatrix",
    "estimate_tokens",
    "last_turn",
    "litellm_prices",
    "load_any",
    "load_jsonl",
    "load_routellm_gsm8k",
    "load_routellm_mmlu",
    "load_routerbench",
    "strip_shared_prefix",
]

csv.field_size_limit(sys.maxsize)

RowIndex = Sequence[int] | np.ndarray | slice


@dataclass
class ScoreMatrix:
    """Scores and costs of m models on n prompts.

    ``scores[i, j]`` is model j's score on prompt i in [0, 1], NaN where missing (not run / not graded);
    ``costs[i, j]`` the dollars that call cost (NaN where unknown). NaN policy: metrics ignore NaN; a router
    evaluated on a row where its chosen model's score is NaN should skip that row — or call ``dropna()`` first to
    keep only rows where every model has a score.
    """

    prompts: list[str]
    models: list[str]
    scores: np.ndarray
    costs: np.ndarray
    categories: list[str]
    ids: list[str]
    source: str = ""

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.costs = np.asarray(self.costs, dtype=np.float64)
        n, m = len(self.prompts), len(self.models)
        if self.scores.shape != (n, m) or self.costs.shape != (n, m):
            raise ValueError(f"scores {self.scores.shape} / costs {self.costs.shape} must be ({n}, {m})")
        if len(self.categories) != n or len(self.ids) != n:
            raise ValueError("categories and ids need one entry per prompt")
        if len(set(self.models)) != m:
            raise ValueError("model names must be unique")
        s = self.scores[~np.isnan(self.scores)]
        if s.size and (s.min() < 0.0 or s.max() > 1.0):
            raise ValueError("scores must lie in [0, 1]")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n(self) -> int:
        return len(self.prompts)

    @property
    def m(self) -> int:
        return len(self.models)

    def model_index(self, name: str) -> int:
        return self.models.index(name)

    def subset(self, rows: RowIndex) -> ScoreMatrix:
        """The prompts at ``rows`` (indices, a boolean mask of length n, or a slice), all models."""
        if isinstance(rows, slice):
            idx = np.arange(self.n)[rows]
        else:
            r = np.asarray(rows)
            idx = np.flatnonzero(r) if r.dtype == bool else r.astype(np.int64).ravel()
            if r.dtype == bool and r.shape != (self.n,):
                raise ValueError("boolean mask must have one entry per prompt")
        return ScoreMatrix(
            prompts=[self.prompts[i] for i in idx],
            models=list(self.models),
            scores=self.scores[idx],
            costs=self.costs[idx],
            categories=[self.categories[i] for i in idx],
            ids=[self.ids[i] for i in idx],
            source=self.source,
        )

    def select_models(self, names: Sequence[str]) -> ScoreMatrix:
        """Only the named models, in the given order (KeyError for an unknown name)."""
        cols = []
        for name in names:
            if name not in self.models:
                raise KeyError(f"unknown model {name!r}; have {self.models}")
            cols.append(self.models.index(name))
        return ScoreMatrix(
            prompts=list(self.prompts),
            models=list(names),
            scores=self.scores[:, cols],
            costs=self.costs[:, cols],
            categories=list(self.categories),
            ids=list(self.ids),
            source=self.source,
        )

    @staticmethod
    def concat(parts: Sequence[ScoreMatrix]) -> ScoreMatrix:
        """Rows of all parts stacked. Models are the union in first-seen order; a model absent from a part gets NaN
        score and cost there. Sources are joined with ``+``."""
        if not parts:
            raise ValueError("nothing to concatenate")
        models: list[str] = []
        for p in parts:
            models += [name for name in p.models if name not in models]
        blocks_s, blocks_c = [], []
        for p in parts:
            s = np.full((p.n, len(models)), np.nan)
            c = np.full((p.n, len(models)), np.nan)
            for j, name in enumerate(p.models):
                k = models.index(name)
                s[:, k] = p.scores[:, j]
                c[:, k] = p.costs[:, j]
            blocks_s.append(s)
            blocks_c.append(c)
        sources: list[str] = []
        for p in parts:
            if p.source not in sources:
                sources.append(p.source)
        return ScoreMatrix(
            prompts=[t for p in parts for t in p.prompts],
            models=models,
            scores=np.vstack(blocks_s),
            costs=np.vstack(blocks_c),
            categories=[c for p in parts for c in p.categories],
            ids=[i for p in parts for i in p.ids],
            source="+".join(sources),
        )

    def dropna(self, how: str = "any") -> ScoreMatrix:
        """Drop prompts with a missing score: ``how="any"`` (any model NaN) or ``"all"`` (every model NaN)."""
        missing = np.isnan(self.scores)
        if how == "any":
            bad = missing.any(axis=1)
        elif how == "all":
            bad = missing.all(axis=1)
        else:
            raise ValueError("how must be 'any' or 'all'")
        return self.subset(~bad)

    def model_points(self) -> list[tuple[float, float]]:
        """Per model (mean cost per prompt, accuracy), NaN ignored — the single-model points of a cost/quality plot."""
        out = []
        for j in range(self.m):
            s, c = self.scores[:, j], self.costs[:, j]
            ok = ~np.isnan(s)
            out.append(
                (
                    float(np.nanmean(c[ok])) if ok.any() else math.nan,
                    float(s[ok].mean()) if ok.any() else math.nan,
                )
            )
        return out


# ---------------------------------------------------------------- prompt text


def last_turn(prompt: str) -> str:
    """The last turn of a RouterBench prompt (the string form of a Python list of turns); the text itself when it is
    not such a list."""
    text = prompt.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            turns = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return prompt
        if isinstance(turns, (list, tuple)) and turns:
            last = turns[-1]
            if isinstance(last, dict):  # {"role": ..., "content": ...} turns
                return str(last.get("content", ""))
            return str(last)
    return prompt


def strip_shared_prefix(texts: Sequence[str], min_chars: int = 200) -> list[str]:
    """Remove a few-shot block that every text starts with.

    Let P be the longest common prefix of ``texts``. If there are at least two texts and ``len(P) ≥ min_chars``,
    each text is cut after the last blank line (``"\\n\\n"``) inside P, so only whole blocks of the shared prefix are
    removed and the rest (the question) is kept intact. Otherwise the texts are returned unchanged.
    """
    texts = list(texts)
    if len(texts) < 2:
        return texts
    prefix = os.path.commonprefix(texts)
    if len(prefix) < min_chars:
        return texts
    cut = prefix.rfind("\n\n")
    if cut < 0:
        return texts
    cut += 2
    return [t[cut:] if len(t) > cut else t for t in texts]


def _strip_by_category(prompts: list[str], categories: list[str]) -> list[str]:
    out = list(prompts)
    for cat in dict.fromkeys(categories):
        idx = [i for i, c in enumerate(categories) if c == cat]
        for i, t in zip(idx, strip_shared_prefix([prompts[i] for i in idx]), strict=True):
            out[i] = t
    return out


def _parse_score(value: str | None) -> float:
    if value is None:
        return math.nan
    v = value.strip()
    if v == "" or v.lower() in ("nan", "none", "null"):
        return math.nan
    if v.lower() == "true":
        return 1.0
    if v.lower() == "false":
        return 0.0
    return float(v)


def _parse_cost(value: str | None) -> float:
    if value is None or value.strip() == "":
        return math.nan
    return float(value)


# ---------------------------------------------------------------- RouterBench


def load_routerbench(path: str | os.PathLike[str], merge_duplicates: bool = True) -> ScoreMatrix:
    """Load one RouterBench CSV.

    Models are the columns ``X`` for which ``X|total_cost`` exists; scores are parsed as floats, an empty cell is
    NaN (missing, not 0); costs come from ``X|total_cost``. Category = ``eval_name`` (else the file stem), id =
    ``sample_id`` (else ``<stem>.<row>``). Prompt = last turn, with a category-wide few-shot prefix stripped.

    ``merge_duplicates`` (default): rows sharing a ``sample_id`` are merged into one — for each model, score and
    cost are taken from the first of those rows where its score is present (else NaN score, first row's cost).
    In ARC-Challenge, 7 questions appear twice: once as a two-turn prompt graded only for some models and once as a
    one-turn prompt graded for the others; merging gives each question one row. ``merge_duplicates=False`` keeps the
    file's rows as they are.
    """
    p = Path(path)
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    models = [c for c in header if "|" not in c and f"{c}|total_cost" in header]
    if not models:
        raise ValueError(f"{p}: no 'MODEL' / 'MODEL|total_cost' column pairs — not a RouterBench CSV")
    order: list[str] = []
    groups: dict[str, list[dict[str, str]]] = {}
    for i, r in enumerate(rows):
        key = r.get("sample_id") or f"{p.stem}.{i}"
        if not merge_duplicates and key in groups:
            key = f"{key}#{i}"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    n, m = len(order), len(models)
    scores = np.full((n, m), np.nan)
    costs = np.full((n, m), np.nan)
    prompts: list[str] = []
    cats: list[str] = []
    for i, key in enumerate(order):
        g = groups[key]
        prompts.append(last_turn(g[0].get("prompt", "")))
        cats.append(g[0].get("eval_name") or p.stem)
        for j, model in enumerate(models):
            costs[i, j] = _parse_cost(g[0].get(f"{model}|total_cost"))
            for r in g:
                s = _parse_score(r.get(model))
                if not math.isnan(s):
                    scores[i, j] = s
                    costs[i, j] = _parse_cost(r.get(f"{model}|total_cost"))
                    break
    return ScoreMatrix(
        prompts=_strip_by_category(prompts, cats),
        models=models,
        scores=scores,
        costs=costs,
        categories=cats,
        ids=order,
        source=f"routerbench:{p.name}",
    )


# ---------------------------------------------------------------- RouteLLM (no costs in the files)

#: LiteLLM cost-map keys used to price RouteLLM's two models. Mixtral is priced at Together AI's rate
#: ($0.60 / 1M tokens in and out), the rate RouterBench's own mixtral-8x7b-chat costs imply.
ROUTELLM_PRICE_KEYS: dict[str, str] = {
    "gpt-4-1106-preview": "gpt-4-1106-preview",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "together_ai/mistralai/Mixtral-8x7B-Instruct-v0.1",
}


def litellm_prices(keys: dict[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """``{model: (usd per input token, usd per output token)}`` from LiteLLM's bundled cost map (read offline:
    ``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set before litellm is imported)."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm  # imported here: slow to import, and only these loaders need it

    out = {}
    for model, key in (keys or ROUTELLM_PRICE_KEYS).items():
        entry = litellm.model_cost.get(key)
        if entry is None or entry.get("input_cost_per_token") is None:
            raise KeyError(f"LiteLLM's cost map has no per-token price for {key!r}")
        out[model] = (float(entry["input_cost_per_token"]), float(entry.get("output_cost_per_token") or 0.0))
    return out


def estimate_tokens(text: str) -> int:
    """Token estimate: ``max(1, ceil(len(text) / 4))`` — OpenAI's rule of thumb of ~4 characters per token for
    English text. Used only to price RouteLLM files, which record no token counts; the real tokenizers (cl100k for
    GPT-4, Mixtral's SentencePiece) differ by up to ~20% on English and more on code or numbers."""
    return max(1, math.ceil(len(text) / 4))


def _price(prompt: str, response: str | None, out_tokens: int, price: tuple[float, float]) -> float:
    n_out = estimate_tokens(response) if response else out_tokens
    return estimate_tokens(prompt) * price[0] + n_out * price[1]


def load_routellm_gsm8k(
    path: str | os.PathLike[str],
    prices: dict[str, tuple[float, float]] | None = None,
) -> ScoreMatrix:
    """Load RouteLLM's ``gsm8k_responses.csv`` (columns: ``prompt``, ``MODEL`` = True/False, ``MODEL_response``).

    Score = 1.0 for True, 0.0 for False, NaN for empty. Cost of model X on a prompt =
    ``estimate_tokens(prompt) · in_price_X + estimate_tokens(X's response) · out_price_X`` with prices from
    ``litellm_prices()`` unless ``prices`` is given. Category "gsm8k", ids ``gsm8k.<row>``.
    """
    p = Path(path)
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    models = [c for c in header if c != "prompt" and not c.endswith("_response")]
    price = prices or litellm_prices({m: ROUTELLM_PRICE_KEYS.get(m, m) for m in models})
    n, m = len(rows), len(models)
    scores = np.full((n, m), np.nan)
    costs = np.full((n, m), np.nan)
    for i, r in enumerate(rows):
        for j, model in enumerate(models):
            scores[i, j] = _parse_score(r.get(model))
            costs[i, j] = _price(r["prompt"], r.get(f"{model}_response"), 1, price[model])
    return ScoreMatrix(
        prompts=[r["prompt"] for r in rows],
        models=models,
        scores=scores,
        costs=costs,
        categories=["gsm8k"] * n,
        ids=[f"gsm8k.{i}" for i in range(n)],
        source=f"routellm:{p.name}",
    )


def load_routellm_mmlu(
    directory: str | os.PathLike[str],
    prices: dict[str, tuple[float, float]] | None = None,
    output_tokens: int = 1,
) -> ScoreMatrix:
    """Load RouteLLM's MMLU responses: one ``mmlu_<subject>.csv`` per subject (``prompt``, ``MODEL`` = True/False).

    Category = the subject; ids ``mmlu.<subject>.<row>``; files read in sorted name order. There are no responses,
    so cost = ``estimate_tokens(prompt) · in_price + output_tokens · out_price`` (default 1 output token: the answer
    letter). A few prompts appear under two subjects; they are kept as separate rows.
    """
    d = Path(directory)
    files = sorted(d.glob("mmlu_*.csv"))
    if not files:
        raise ValueError(f"{d}: no mmlu_*.csv files")
    parts = []
    price = prices
    for fp in files:
        subject = fp.stem[len("mmlu_") :]
        with fp.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        models = [c for c in header if c != "prompt" and not c.endswith("_response")]
        if price is None:
            price = litellm_prices({m: ROUTELLM_PRICE_KEYS.get(m, m) for m in models})
        n, m = len(rows), len(models)
        scores = np.full((n, m), np.nan)
        costs = np.full((n, m), np.nan)
        for i, r in enumerate(rows):
            for j, model in enumerate(models):
                scores[i, j] = _parse_score(r.get(model))
                costs[i, j] = _price(r["prompt"], None, output_tokens, price[model])
        parts.append(
            ScoreMatrix(
                prompts=[r["prompt"] for r in rows],
                models=models,
                scores=scores,
                costs=costs,
                categories=[subject] * n,
                ids=[f"mmlu.{subject}.{i}" for i in range(n)],
                source="routellm:mmlu",
            )
        )
    return ScoreMatrix.concat(parts)


# ---------------------------------------------------------------- JSONL and dispatch


def load_jsonl(path: str | os.PathLike[str]) -> ScoreMatrix:
    """Load the project's JSONL replay format (module docstring). Models are the union over lines in first-seen
    order; a model missing from a line, or a null score / cost, is NaN. ``id`` defaults to ``<stem>.<line>``,
    ``category`` to "". The prompt is taken as written (a list of turns or chat messages → its last turn)."""
    p = Path(path)
    records = []
    with p.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if line.strip():
                rec = json.loads(line)
                if "prompt" not in rec or not isinstance(rec.get("models"), dict):
                    raise ValueError(f"{p}:{line_no + 1}: need 'prompt' and a 'models' object")
                records.append((line_no, rec))
    models: list[str] = []
    for _, rec in records:
        models += [name for name in rec["models"] if name not in models]
    n, m = len(records), len(models)
    scores = np.full((n, m), np.nan)
    costs = np.full((n, m), np.nan)
    prompts, cats, ids = [], [], []
    for i, (line_no, rec) in enumerate(records):
        prompt = rec["prompt"]
        if isinstance(prompt, list):
            last = prompt[-1] if prompt else ""
            prompt = last.get("content", "") if isinstance(last, dict) else last
        prompts.append(str(prompt))
        cats.append(str(rec.get("category") or ""))
        ids.append(str(rec.get("id", f"{p.stem}.{line_no}")))
        for name, entry in rec["models"].items():
            j = models.index(name)
            s, c = entry.get("score"), entry.get("cost")
            scores[i, j] = math.nan if s is None else float(s)
            costs[i, j] = math.nan if c is None else float(c)
    return ScoreMatrix(
        prompts=prompts, models=models, scores=scores, costs=costs, categories=cats, ids=ids, source=f"jsonl:{p.name}"
    )


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def load_any(path: str | os.PathLike[str]) -> ScoreMatrix:
    """Load a replay file or directory, choosing the loader by format:

    - ``.jsonl`` → ``load_jsonl``;
    - ``.csv`` with ``MODEL|total_cost`` columns → ``load_routerbench``; with ``prompt`` and ``*_response`` or
      True/False model columns and no costs → ``load_routellm_gsm8k``;
    - a directory with ``mmlu_*.csv`` → ``load_routellm_mmlu``; otherwise every ``*.csv`` / ``*.jsonl`` in it, loaded
      one by one and concatenated (e.g. the three RouterBench splits).
    """
    p = Path(path)
    if p.is_dir():
        if any(p.glob("mmlu_*.csv")):
            return load_routellm_mmlu(p)
        files = sorted([*p.glob("*.csv"), *p.glob("*.jsonl")])
        if not files:
            raise ValueError(f"{p}: no .csv or .jsonl files")
        return ScoreMatrix.concat([load_any(f) for f in files])
    if p.suffix == ".jsonl":
        return load_jsonl(p)
    if p.suffix == ".csv":
        header = _csv_header(p)
        if any(c.endswith("|total_cost") for c in header):
            return load_routerbench(p)
        if "prompt" in header and len(header) > 1:
            return load_routellm_gsm8k(p)
    raise ValueError(f"{p}: unknown replay format")
