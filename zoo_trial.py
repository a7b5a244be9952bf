"""Scratch: parallel zoo trials on a many-core box, 2 threads each (not part of the package)."""
import json, os, sys, time, tempfile, subprocess
from dataclasses import replace
from pathlib import Path

VARIANTS = {
    "small-64x1": dict(layers=1, hidden=64, heads=2, lr=3e-3, seed=11, kind="general"),
    "small-64x2": dict(layers=2, hidden=64, heads=2, lr=3e-3, seed=11, kind="general"),
    "large-128x3": dict(layers=3, hidden=128, heads=4, lr=2e-3, seed=12, kind="general"),
    "large-128x4": dict(layers=4, hidden=128, heads=4, lr=2e-3, seed=12, kind="general"),
    "large-192x2": dict(layers=2, hidden=192, heads=6, lr=2e-3, seed=12, kind="general"),
    "expert-arithmetic": dict(layers=2, hidden=96, heads=3, lr=3e-3, seed=21, kind="arithmetic"),
    "expert-sql": dict(layers=2, hidden=96, heads=3, lr=3e-3, seed=22, kind="sql"),
    "expert-units": dict(layers=2, hidden=96, heads=3, lr=3e-3, seed=23, kind="units"),
}
BUDGET = float(os.environ.get("TRIAL_BUDGET", "300"))
SUITES = ("arithmetic", "sql", "units")


def spec_for(name, steps=100):
    from evals.zoo.spec import ModelSpec
    v = VARIANTS[name]
    suites = {s: 1.0 for s in SUITES} if v["kind"] == "general" else {v["kind"]: 1.0}
    return ModelSpec(name=name, layers=v["layers"], hidden=v["hidden"], heads=v["heads"], steps=steps, batch=32,
                     lr=v["lr"], seed=v["seed"], suites=suites, role="general" if v["kind"] == "general" else "expert")


def calibrate(spec, pools, n=6):
    import torch
    from evals.zoo.llama import make_llama
    from evals.zoo.train import train_model
    with tempfile.TemporaryDirectory() as d:
        make_llama(Path(d) / "m", layers=spec.layers, hidden=spec.hidden, heads=spec.heads, seed=99)
        r = train_model(replace(spec, steps=n, warmup=1), Path(d) / "m", pools, progress=False)
    return r.seconds / n


def child(name, out):
    import torch
    torch.set_num_threads(2)
    from evals.suites import get_suite
    from evals.zoo.build import build, load_pools
    from evals.zoo.evaluate import evaluate_zoo
    t0 = time.time()
    spec = spec_for(name)
    pools = load_pools([s for s in spec.suites], get_suite, spec.max_len)
    t_own = calibrate(spec, pools)
    if VARIANTS[name]["kind"] == "general":
        ref = spec_for("large-128x3")
        rpools = load_pools(list(ref.suites), get_suite, ref.max_len) if ref.suites != spec.suites else pools
        t_ref = calibrate(ref, rpools) if name != "large-128x3" else t_own
        steps = int(BUDGET / t_ref) // 50 * 50
        steps = min(steps, int(1.15 * BUDGET / t_own) // 50 * 50)
    else:
        t_ref = None
        steps = int(BUDGET / t_own) // 50 * 50
    spec = replace(spec, steps=max(int(os.environ.get("TRIAL_MIN_STEPS", "50")), steps))
    print(name, "t_own", t_own, "t_ref", t_ref, "steps", spec.steps, flush=True)
    man = build(out, specs=[spec], get_suite=get_suite, progress=False, log=lambda m: print(m, flush=True))
    t1 = time.time()
    acc = evaluate_zoo(out, suites=SUITES, get_suite=get_suite, n=int(os.environ.get("TRIAL_N", "150")), progress=False)
    res = dict(name=name, spec=spec.to_json(), t_own=t_own, t_ref=t_ref, manifest=man["models"][0],
               acc=acc["models"][name], eval_s=time.time() - t1, total_s=time.time() - t0)
    print("RESULT", json.dumps(res), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(sys.argv[1], Path(sys.argv[2]))
        sys.exit(0)
    OUT = Path(os.environ.get("OUT", "/tmp/trial_out"))
    work = Path(tempfile.mkdtemp())
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", PYTHONPATH=os.getcwd(), TOKENIZERS_PARALLELISM="false")
    names = sys.argv[1:] or list(VARIANTS)
    procs = {n: subprocess.Popen([sys.executable, __file__, n, str(work / "zoo" / n)], env=env,
                                 stdout=open(work / f"{n}.log", "w"), stderr=subprocess.STDOUT) for n in VARIANTS}
    deadline = time.time() + float(os.environ.get("TRIAL_DEADLINE", "440"))
    for n, p in procs.items():
        try:
            p.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    results, logs = [], []
    for n in VARIANTS:
        txt = (work / f"{n}.log").read_text()
        logs.append(f"===== {n}\n{txt}")
        results += [json.loads(line[7:]) for line in txt.splitlines() if line.startswith("RESULT ")]
    (OUT / "logs.txt").write_text("\n".join(logs))
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    subprocess.run(["tar", "czf", str(OUT / "models.tar.gz"), "-C", str(work), "zoo"])
    for r in results:
        print(r["name"], "steps", r["spec"]["steps"], "train_s", r["manifest"]["train_seconds"], "loss",
              r["manifest"]["mean_loss_last50"], "flops", r["manifest"]["flops_per_token"], r["acc"])
