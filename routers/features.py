"""Per-query text features shared by the routers: hand features and hashed TF-IDF of the routing text.

- `hand_features`: length / digits / code / math keyword counts and the numbers a problem states (the heuristic
  router's inputs; a standardised block of the learned routers' features).
- Hashed counts (`HashingVectorizer`, stateless, cached on the query); the IDF (`TfidfTransformer`) is fit by each
  router on its own training data.

Every feature is computed on a query's routing text (`RouteQuery.text`, the rule in `routers.base.routing_text`).
Left out: sentence embeddings (`routers.embedder`) and learned prompt rewriting (GLIDER's LLM-written instruction) —
the query itself stands in for it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from routers.base import RouteQuery

N_HASH_FEATURES = 2**18

# -------------------------------------------------------------------------------------------------- hand features

_CODE = re.compile(r"\b(def|function|class|return|python|code|program|sql|select|implement|list|array|string)\b", re.I)
_MATH = re.compile(r"\b(how many|how much|calculate|compute|sum|total|percent|ratio|equation|solve|prove)\b", re.I)
_REASON = re.compile(r"\b(why|explain|because|therefore|compare|which of the following|most likely)\b", re.I)
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_FRACTION = re.compile(r"\d+\s*/\s*\d+")
_QUANTITY = re.compile(
    r"(%|\$|\b(?:twice|double|triple|half|third|quarter|percent|each|every|per|times|remaining|rest|more than|"
    r"less than|fewer)\b)", re.I)
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
SIZE_KEYWORD_NAMES = ["log_chars", "log_words", "digits", "code_kw", "math_kw", "reason_kw", "questions", "lines"]
HAND_FEATURE_NAMES = SIZE_KEYWORD_NAMES + ["numbers", "distinct_numbers", "longest_number", "decimals", "fractions",
                                           "quantity_words", "sentences"]


def hand_features(text: str) -> np.ndarray:
    """`HAND_FEATURE_NAMES` of one routing text: size, keyword counts, and the numeric structure of a word problem
    (how many quantities, how long, decimals / fractions / percent-style words, sentences = steps stated)."""
    words = text.split()
    numbers = _NUMBER.findall(text)
    return np.array(
        [
            np.log1p(len(text)),
            np.log1p(len(words)),
            np.log1p(sum(ch.isdigit() for ch in text)),
            len(_CODE.findall(text)),
            len(_MATH.findall(text)),
            len(_REASON.findall(text)),
            text.count("?"),
            np.log1p(text.count("\n")),
            len(numbers),
            len(set(numbers)),
            max((sum(ch.isdigit() for ch in n) for n in numbers), default=0),
            sum("." in n for n in numbers),
            len(_FRACTION.findall(text)),
            len(_QUANTITY.findall(text)),
            len(_SENTENCE_END.findall(text)),
        ],
        dtype=float,
    )


def hand_matrix(queries: Sequence[RouteQuery]) -> np.ndarray:
    out = np.zeros((len(queries), len(HAND_FEATURE_NAMES)))
    for i, q in enumerate(queries):
        v = q.features.get("hand")
        if v is None:
            v = hand_features(q.text)
            q.features["hand"] = v
        out[i] = v
    return out


# ---------------------------------------------------------------------------------------------------- hashed tf

_HASHER: Any = None


def _hasher() -> Any:
    global _HASHER
    if _HASHER is None:
        from sklearn.feature_extraction.text import HashingVectorizer

        _HASHER = HashingVectorizer(
            n_features=N_HASH_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm=None, lowercase=True
        )
    return _HASHER


def hashed_counts(queries: Sequence[RouteQuery]) -> sp.csr_matrix:
    """Unigram + bigram counts hashed to 2^18 columns (stateless; cached per query)."""
    missing = [i for i, q in enumerate(queries) if "hashed" not in q.features]
    if missing:
        mat = _hasher().transform([queries[i].text for i in missing])
        for row, i in enumerate(missing):
            queries[i].features["hashed"] = mat[row]
    return sp.vstack([q.features["hashed"] for q in queries]).tocsr()


class Tfidf:
    """IDF weights fit on training queries over the hashed counts; `transform` gives L2-normalised TF-IDF rows."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfTransformer

        self._t = TfidfTransformer(sublinear_tf=True)

    def fit(self, queries: Sequence[RouteQuery]) -> Tfidf:
        self._t.fit(hashed_counts(queries))
        return self

    def transform(self, queries: Sequence[RouteQuery]) -> sp.csr_matrix:
        return self._t.transform(hashed_counts(queries)).tocsr()
