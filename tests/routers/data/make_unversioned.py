"""Write the unversioned (pre-`BlendedHeads`, pre-header) router artifacts the upgrade tests load, with the code that
wrote such files: run it on that code (commit 49a4d1d's `routers` and `evals`),

    mkdir /tmp/old-tandem && git archive 49a4d1d routers evals | tar -x -C /tmp/old-tandem
    cd /tmp/old-tandem && OMP_NUM_THREADS=1 PYTHONPATH=. python /path/to/tests/routers/data/make_unversioned.py \
        /path/to/tests/routers/data

It fits glider and logreg on the small matrix of `tests/routers/test_roundtrip.py` (repeated here: the old tree's
tests may differ), pickles them as that code's `Router.save` did (gzipped here: most of a file is the
hashed TF-IDF's IDF vector), and records their predictions on `QUERIES` and the
shipped `routers/artifacts/zoo-knn.pkl`'s decisions on `ZOO_QUERIES`, all with a float32 embedder, in
`unversioned.json`.
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from evals.replay_data import ScoreMatrix
from routers.base import RouteQuery, Router
from routers.calibrated import CalibratedRouter
from routers.features import Embedder
from routers.glider import GliderRouter

MATH = [f"What is {a} plus {b} times {a + b}? Compute the total." for a in range(3, 13) for b in (2, 7)]
CODE = [f"Write a python function that returns the {w} of a list of integers." for w in
        ("sum", "maximum", "minimum", "median", "mode", "length", "reverse", "sorted copy", "product", "mean",
         "second largest", "unique items", "running total", "last element", "first element", "count of zeros",
         "range", "variance", "standard deviation", "count of evens")]
QUERIES = ["What is 5 plus 2 times 7? Compute the total.",
           "Write a python function that returns the sum of a list of integers.",
           "Name a red fruit."]
ZOO_QUERIES = ["How many singers do we have?", "SELECT the names of all employees older than 30.",
               "Convert 3 kilometres to metres.", "What is 12 feet in inches?", "hello",
               "Show the average age of students in each department."]


def small_matrix() -> ScoreMatrix:
    rng = np.random.default_rng(0)
    prompts = MATH + CODE
    n = len(prompts)
    is_math = np.array([i < len(MATH) for i in range(n)])
    scores = np.stack([~is_math & (rng.random(n) < 0.9), is_math & (rng.random(n) < 0.9), rng.random(n) < 0.95], 1)
    costs = np.tile([0.001, 0.01, 0.1], (n, 1)) * (1 + 0.1 * rng.random((n, 3)))
    cats = ["math" if m else "code" for m in is_math]
    return ScoreMatrix(prompts, ["cheap", "mid", "dear"], scores.astype(float), costs, cats,
                       [str(i) for i in range(n)], "test")


def main(out: Path) -> None:
    import routers

    assert not (Path(routers.__file__).parent / "embedder.py").exists(), "run this on the old code"
    tmp = Path(tempfile.mkdtemp())
    embedder = Embedder(cache_path=tmp / "emb.sqlite", precision="float32")
    expected: dict[str, object] = {"queries": QUERIES, "zoo_queries": ZOO_QUERIES}
    for router in (GliderRouter(seed=0), CalibratedRouter(seed=0)):
        router.embedder = embedder
        router.fit(small_matrix())
        path = tmp / f"unversioned-{router.name}.pkl"
        router.save(path)
        (out / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes(), 9, mtime=0))
        qs = [RouteQuery(prompt=q) for q in QUERIES]
        expected[router.name] = {"predict": router.predict(qs).tolist(),
                                 "routes": [router.decide(q).route for q in QUERIES]}
    zoo = Router.load(Path("routers/artifacts/zoo-knn.pkl"))
    zoo.embedder = embedder
    decisions = [zoo.decide(q) for q in ZOO_QUERIES]
    expected["zoo-knn"] = {"routes": [d.route for d in decisions], "scores": [d.scores for d in decisions]}
    (out / "unversioned.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
