"""schemathesis at scale against a gateway with keys, a deployments route and a router route: counts by status class.

``python -m bench.schemathesis_load [--chat 2600] [--completions 1600] [--feedback 600] [--other 80] [--json]``
starts two ``bench.upstream_stub`` processes and one ``tandem serve`` (SQLite request log in a temp folder) with
``auth.require_keys``, a deployments route ``pool`` over both stubs (``prefix`` strategy), two plain routes
``small``/``large`` over the stubs, a router route ``pick`` (a ``knn`` router trained here on made-up records) choosing
between ``small`` and ``pool``, and a route ``zoo`` over the zoo ``small`` model in-process (the stub serves no text
completions). One API key is made with ``tandem keys create``.

schemathesis generates positive and negative cases for every operation in the gateway's own ``/openapi.json``
(``--chat``/``--completions``/``--feedback`` examples per mode for those three, ``--other`` for the rest; operations
without parameters are exhausted after one). Each case carries the key or not, and when its body names a model it is
pointed, half the time, at a served route (chats at ``pool``, ``pick`` or ``small``; completions at ``zoo``), so it
gets past auth and model lookup and reaches a backend. The report counts answers per operation and status class
(2xx, 4xx, 5xx) and quotes the first 5xx answers; the issue's target is 0 5xx over ≥ 10,000 cases. The same
machinery runs at 1,000 cases in ``tests/gateway/test_fuzz.py``; this is its load-scale twin, run by hand, not in CI.

What it leaves out: admin endpoints with an admin key, Redis-backed limits, and pass/fail exit codes beyond
"the gateway died" (exit 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.upstream_stub import start_stub
from evals.gateway_process import GatewayProcess, start_gateway, stop_process

REPO = Path(__file__).resolve().parents[1]
CHAT_TARGETS = ("pool", "pick", "small")
LIMITS = {"max_body_bytes": 65536, "max_prompt_chars": 4096, "max_tokens_cap": 64, "default_max_tokens": 8}


def status_class(status: int) -> str:
    """``2xx``, ``3xx``, ``4xx`` or ``5xx`` (``other`` outside 200–599)."""
    return f"{status // 100}xx" if 200 <= status < 600 else "other"


def train_router(path: Path) -> str:
    """A ``knn`` router over ``small``/``pool``: ``pool`` better on long prompts, ``small`` cheaper."""
    from routers.base import Record
    from routers.registry import default_router_registry

    records = []
    for i in range(40):
        long = i % 2 == 0
        prompt = ("explain in detail " * 4 if long else "hi ") + str(i)
        records.append(Record(prompt=prompt, candidate="small", score=0.2 if long else 1.0, cost=0.001))
        records.append(Record(prompt=prompt, candidate="pool", score=1.0, cost=0.01))
    router = default_router_registry().create("knn").fit(records)
    router.save(path)
    return str(path)


def gateway_config(stubs: list[str], artifact: str, zoo_dir: Path) -> dict[str, Any]:
    def stub(name: str, url: str) -> dict[str, Any]:
        return {"name": name, "kind": "openai", "base_url": url, "connect_timeout_s": 1.0, "timeout_s": 30,
                "price": {"input_per_mtok": 1, "output_per_mtok": 2}}

    return {"auth": {"require_keys": True}, "limits": LIMITS,
            "backends": [stub("stub-a", stubs[0]), stub("stub-b", stubs[1]),
                         {"name": "zoo-small", "kind": "local", "path": str(zoo_dir), "device": "cpu", "threads": 1,
                          "max_context": 256}],
            "routes": [{"name": "pool", "strategy": "prefix",
                        "deployments": [{"backend": "stub-a"}, {"backend": "stub-b"}]},
                       {"name": "small", "backend": "stub-a"}, {"name": "large", "backend": "stub-b"},
                       {"name": "zoo", "backend": "zoo-small"},
                       {"name": "pick", "kind": "router", "router": "knn", "artifact": artifact,
                        "candidates": ["small", "pool"]}],
            "default_route": "pool"}


def create_key(g: GatewayProcess) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--db", g.db_url, "--name",
                          "schemathesis"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["key"]


def httpx_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """schemathesis builds ``requests``-style arguments; translate the few that differ for httpx."""
    out = {k: kw[k] for k in ("headers", "params", "cookies") if kw.get(k) is not None}
    if "json" in kw:
        out["json"] = kw["json"]
    elif kw.get("data") is not None:
        out["content"] = kw["data"]
    return out


def _one_mode(op: Any, mode: Any, n: int, client: httpx.Client, base: str, key: str, counts: dict[str, Counter],
              failures: list[str], derandomize: bool) -> Any:
    """The hypothesis test that sends ``n`` generated cases of ``op`` in ``mode``."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    strategy = st.tuples(op.as_strategy(generation_mode=mode), st.booleans(), st.booleans(),
                         st.sampled_from(CHAT_TARGETS))

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              derandomize=derandomize)
    @given(strategy)
    def run(args: tuple) -> None:
        case, with_key, aim, target = args
        if aim and isinstance(case.body, dict) and "model" in case.body:
            text = case.path.endswith("/completions") and "chat" not in case.path
            case.body["model"] = "zoo" if text else target
        kw = case.as_transport_kwargs(base_url=base)
        args_ = httpx_kwargs(kw)
        headers = dict(args_.pop("headers", None) or {})
        if with_key:
            headers["authorization"] = f"Bearer {key}"
        r = client.send(client.build_request(kw["method"], kw["url"], headers=headers, **args_))
        counts.setdefault(op.label, Counter())[status_class(r.status_code)] += 1
        if r.status_code >= 500 and len(failures) < 20:
            failures.append(f"{r.status_code} {case.as_curl_command()} -> {r.text[:300]}")

    return run


def fuzz(base: str, key: str, examples: dict[str, int], other: int, seed_derandomize: bool = True
         ) -> tuple[dict[str, Counter], list[str]]:
    """Every operation in both generation modes; per operation a Counter of status classes, and the first 5xx."""
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(base + "/openapi.json", headers={"authorization": f"Bearer {key}"})
    counts: dict[str, Counter] = {}
    failures: list[str] = []
    with httpx.Client(timeout=60) as client:
        for result in schema.get_all_operations():
            op = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run = _one_mode(op, mode, examples.get(op.label, other), client, base, key, counts, failures,
                                seed_derandomize)
                try:
                    run()
                except Unsatisfiable:
                    pass  # an operation with no parameters has no invalid form
    return counts, failures


def render(report: dict[str, Any]) -> str:
    lines = [f"schemathesis: {report['cases']} cases in {report['seconds']:.0f} s against a gateway with keys, a "
             "deployments route and a router route", "  operation                              2xx    4xx    5xx"]
    for label, c in sorted(report["by_operation"].items()):
        lines.append(f"  {label:<36} {c.get('2xx', 0):6d} {c.get('4xx', 0):6d} {c.get('5xx', 0):6d}")
    t = report["total"]
    lines.append(f"total: 2xx {t.get('2xx', 0)}, 4xx {t.get('4xx', 0)}, 5xx {t.get('5xx', 0)}"
                 + (f", other {t['other']}" if t.get("other") else "") + f"; gateway alive: {report['alive']}")
    lines += [f"  5xx: {f}" for f in report["first_5xx"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chat", type=int, default=2600, help="examples per mode for POST /v1/chat/completions")
    p.add_argument("--completions", type=int, default=1600, help="examples per mode for POST /v1/completions")
    p.add_argument("--feedback", type=int, default=600, help="examples per mode for POST /v1/feedback")
    p.add_argument("--other", type=int, default=80, help="examples per mode for every other operation")
    p.add_argument("--zoo-dir", type=Path, default=REPO / "evals" / "zoo" / "models" / "small")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args(argv)
    examples = {"POST /v1/chat/completions": a.chat, "POST /v1/completions": a.completions,
                "POST /v1/feedback": a.feedback}
    work = Path(tempfile.mkdtemp(prefix="tandem-schemathesis-"))
    stubs = [start_stub(tokens=4) for _ in range(2)]
    g: GatewayProcess | None = None
    try:
        g = start_gateway(gateway_config([u for _, u in stubs], train_router(work / "knn.pkl"), a.zoo_dir),
                          work / "gw")
        key = create_key(g)
        t0 = time.monotonic()
        counts, failures = fuzz(g.base, key, examples, a.other)
        total: Counter = Counter()
        for c in counts.values():
            total.update(c)
        report = {"cases": sum(total.values()), "seconds": time.monotonic() - t0,
                  "by_operation": {k: dict(v) for k, v in counts.items()}, "total": dict(total),
                  "first_5xx": failures, "alive": g.proc.poll() is None}
    finally:
        if g is not None:
            g.stop()
        for proc, _ in stubs:
            stop_process(proc)
    print(json.dumps(report, indent=2) if a.json else render(report))
    return 0 if report["alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
