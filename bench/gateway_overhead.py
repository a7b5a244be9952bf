"""Gateway overhead benchmark: latency and throughput of a fast upstream stub, direct and through a gateway.

In one run (same machine state) it starts the upstream stub (``bench.upstream_stub``, its own process), starts
``tandem serve`` against it (or uses ``--gateway-url`` for any other OpenAI-compatible gateway, e.g. a LiteLLM
proxy, that routes ``--gateway-model`` to the same stub), warms both up, then measures with load-generator worker
processes (``bench.loadgen``, raw asyncio + httptools client), alternating direct and gateway in each phase:

1. latency, non-streaming: ``--requests`` requests, ``--latency-concurrency`` in flight (1: sequential) → p50/p99;
2. latency, streaming: time to first chunk (TTFT) and total, p50/p99;
3. max throughput, non-streaming: ``--concurrency`` connections for ``--duration`` s → requests/s;
4. max throughput, streaming → streams/s.

It prints a table (direct vs gateway, ratios, added ms) and, with ``--json``, ends with one JSON line holding at least
``added_p50_ms``, ``added_p99_ms``, ``gateway_rps`` and ``direct_rps``. Targets (2 cores, one gateway worker):
added p50 ≤ 2 ms and ≥ 1,000 requests/s non-streaming; ``targets_met`` says whether this run met them.
``--profile-gateway out.svg`` adds one more throughput run (non-streaming; ``--profile-stream``: streaming) under
``py-spy record`` (not counted in the figures).

Run from the repository root: ``python -m bench.gateway_overhead [--json]``.
What it leaves out: the stub's numbers are an upper bound for any real model server; the client, stub and gateway
share the machine's cores (``--pin`` puts the gateway on CPU 0 and the rest on the others); no HTTPS, no open-loop load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import Job, JobResult, LoadgenPool, Target, parse_target, summarize  # noqa: E402
from bench.upstream_stub import start_stub  # noqa: E402
from evals.gateway_process import free_port  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_ADDED_P50_MS = 2.0
TARGET_RPS = 1000.0


# ---------------------------------------------------------------------------------------------------- processes


def gateway_config(port: int, stub_url: str, workdir: Path) -> str:
    """The YAML config of a tandem gateway with one backend, ``stub``, on the upstream stub."""
    return (
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        f"storage: {{database_url: \"sqlite:///{workdir}/bench.db\", log_prompts: false, spool_dir: \"{workdir}/spool\"}}\n"
        f"backends:\n"
        f"  - {{name: stub, kind: openai, base_url: \"{stub_url}\", price: {{input_per_mtok: 1, output_per_mtok: 2}}}}\n"
        f"default_route: stub\n"
    )


def wait_ready(url: str, proc: subprocess.Popen[Any] | None, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gateway exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s ({last})")


@contextlib.contextmanager
def tandem_gateway(stub_url: str, ready_timeout_s: float) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run ``tandem serve --config <tmp.yaml> --port <free>`` against the stub; yield the process and its URL."""
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        cfg = work / "bench.yaml"
        cfg.write_text(gateway_config(port, stub_url, work))
        log = open(work / "gateway.log", "wb")  # noqa: SIM115 - closed below
        launcher = "import sys; from evals.command import main; sys.argv[0] = 'tandem'; sys.exit(main())"
        cmd = [sys.executable, "-c", launcher, "serve", "--config", str(cfg), "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_ready(url + "/health/live", proc, ready_timeout_s)
            except RuntimeError as e:
                log.flush()
                tail = (work / "gateway.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{e}\n--- gateway log (tail) ---\n{tail}") from None
            yield proc, url + "/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def pin(pid: int, cpus: set[int]) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(pid, cpus)


# ---------------------------------------------------------------------------------------------------- measuring


def _phase(pool: LoadgenPool, job: Job) -> JobResult:
    res = pool.latency(job) if job.kind == "latency" else pool.throughput(job)
    if res.errors:
        print(f"  ! {job.kind} {'stream' if job.stream else 'json'} {job.target.host}:{job.target.port}: "
              f"{res.errors} failed requests, first: {res.first_error}", file=sys.stderr)
    return res


def measure(pool: LoadgenPool, targets: dict[str, Target], a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """All phases, alternating targets inside each phase; per target: figures named like the JSON output."""
    out: dict[str, dict[str, Any]] = {name: {"errors": 0} for name in targets}
    for t in targets.values():  # warm-up: connections, caches, JIT-free but lazy imports in the gateway
        for stream in (False, True):
            pool.latency(Job("latency", t, stream, 4, a.max_tokens, n=a.warmup))
    for stream in (False, True):
        key = "stream_" if stream else ""
        for name, t in targets.items():
            r = _phase(pool, Job("latency", t, stream, a.latency_concurrency, a.max_tokens, n=a.requests))
            lat, first = summarize(r.latencies_ms), summarize(r.ttfb_ms)
            o = out[name]
            o["errors"] += r.errors
            if stream:
                o.update(ttft_p50_ms=first["p50"], ttft_p99_ms=first["p99"])
            o.update({f"{key}p50_ms": lat["p50"], f"{key}p99_ms": lat["p99"], f"{key}mean_ms": lat["mean"]})
    for stream in (False, True):
        key = "stream_" if stream else ""
        for name, t in targets.items():
            r = _phase(pool, Job("throughput", t, stream, a.concurrency, a.max_tokens, duration_s=a.duration))
            lat = summarize(r.latencies_ms)
            o = out[name]
            o["errors"] += r.errors
            o[f"{key}rps"] = r.ok / r.elapsed_s if r.elapsed_s > 0 else float("nan")
            o[f"{key}loaded_p50_ms"] = lat["p50"]
            o[f"{key}loaded_p99_ms"] = lat["p99"]
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def compare(direct: dict[str, float], gateway: dict[str, float]) -> dict[str, float]:
    """Flat report: every figure of both sides (prefixed), added milliseconds and gateway/direct ratios."""
    out: dict[str, float] = {}
    for k, v in direct.items():
        out[f"direct_{k}"] = v
    for k, v in gateway.items():
        out[f"gateway_{k}"] = v
    for k in ("p50_ms", "p99_ms", "stream_p50_ms", "stream_p99_ms", "ttft_p50_ms", "ttft_p99_ms"):
        out[f"added_{k}"] = gateway[k] - direct[k]
        out[f"ratio_{k.removesuffix('_ms')}"] = _ratio(gateway[k], direct[k])
    for k in ("rps", "stream_rps"):
        out[f"ratio_{k}"] = _ratio(gateway[k], direct[k])
    return out


def format_table(r: dict[str, float]) -> str:
    rows = [
        ("latency p50 (ms)", "p50_ms", "added_p50_ms"),
        ("latency p99 (ms)", "p99_ms", "added_p99_ms"),
        ("requests/s", "rps", None),
        ("  p50 under load (ms)", "loaded_p50_ms", None),
        ("  p99 under load (ms)", "loaded_p99_ms", None),
        ("stream TTFT p50 (ms)", "ttft_p50_ms", "added_ttft_p50_ms"),
        ("stream TTFT p99 (ms)", "ttft_p99_ms", "added_ttft_p99_ms"),
        ("stream total p50 (ms)", "stream_p50_ms", "added_stream_p50_ms"),
        ("stream total p99 (ms)", "stream_p99_ms", "added_stream_p99_ms"),
        ("streams/s", "stream_rps", None),
    ]
    lines = [f"{'':24}{'direct':>12}{'gateway':>12}{'ratio':>9}{'added ms':>11}"]
    for label, k, added in rows:
        d, g = r[f"direct_{k}"], r[f"gateway_{k}"]
        ratio = _ratio(g, d)
        add = f"{r[added]:11.3f}" if added else f"{'':11}"
        fmt = "{:12.1f}" if k.endswith("rps") else "{:12.3f}"
        lines.append(f"{label:24}{fmt.format(d)}{fmt.format(g)}{ratio:9.2f}{add}")
    return "\n".join(lines)


def _profile(pool: LoadgenPool, pid: int, t: Target, a: argparse.Namespace) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("  ! --profile-gateway needs py-spy (pip install py-spy)", file=sys.stderr)
        return
    fmt = "speedscope" if a.profile_gateway.endswith(".json") else "flamegraph"
    cmd = [spy, "record", "--nonblocking", "--subprocesses", "-r", "250", "-p", str(pid), "-o", a.profile_gateway,
           "-f", fmt, "-d", str(max(1, int(a.duration)))]
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    pool.throughput(Job("throughput", t, a.profile_stream, a.concurrency, a.max_tokens, duration_s=a.duration))
    _, err = spy_proc.communicate(timeout=a.duration + 30)
    if spy_proc.returncode:
        print(f"  ! py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
    else:
        print(f"gateway profile written to {a.profile_gateway}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Gateway overhead: direct vs through-the-gateway latency and throughput.")
    p.add_argument("--gateway-url", help="an already-running gateway (OpenAI base URL); default: start tandem serve")
    p.add_argument("--gateway-model", default="stub", help="model name the gateway routes to the stub")
    p.add_argument("--gateway-key", default=os.environ.get("BENCH_GATEWAY_KEY"), help="bearer key for the gateway")
    p.add_argument("--stub-url", help="reuse a running upstream stub (OpenAI base URL) instead of starting one")
    p.add_argument("--requests", type=int, default=2000, help="requests per latency phase")
    p.add_argument("--latency-concurrency", type=int, default=1, help="requests in flight for latency phases")
    p.add_argument("--concurrency", type=int, default=64, help="connections for throughput phases")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per throughput phase")
    p.add_argument("--warmup", type=int, default=200, help="warm-up requests per target and mode")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens per answer (streamed chunks)")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="stub's pause between streamed chunks")
    p.add_argument("--loadgen-workers", type=int, default=1, help="load-generator processes")
    p.add_argument("--pin", action="store_true", help="gateway on CPU 0; stub and load generator on the others")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for the gateway")
    p.add_argument("--profile-gateway", metavar="PATH", help="py-spy profile (.svg or .json) of one more run")
    p.add_argument("--profile-stream", action="store_true", help="profile streaming requests instead")
    p.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    with contextlib.ExitStack() as stack:
        stub_proc = None
        stub_url = a.stub_url
        if not stub_url:
            stub_proc, stub_url = start_stub(a.max_tokens, a.chunk_delay_ms)
            stack.callback(_stop, stub_proc)
        gw_proc = None
        if a.gateway_url:
            gw_url, gw_label = a.gateway_url, a.gateway_url
        else:
            gw_proc, gw_url = stack.enter_context(tandem_gateway(stub_url, a.ready_timeout))
            gw_label = "tandem serve (1 worker)"
        pool = stack.enter_context(LoadgenPool(a.loadgen_workers))
        ncpu = os.cpu_count() or 1
        if a.pin and ncpu > 1 and gw_proc is not None:
            pin(gw_proc.pid, {0})
            for pid in [*pool.pids, *([stub_proc.pid] if stub_proc else [])]:
                pin(pid, set(range(1, ncpu)))
        targets = {
            "direct": parse_target(stub_url, "stub"),
            "gateway": parse_target(gw_url, a.gateway_model, a.gateway_key),
        }
        print(f"upstream stub {stub_url}; gateway {gw_label} at {gw_url}; {ncpu} CPUs; "
              f"latency: {a.requests} requests x{a.latency_concurrency}; throughput: {a.concurrency} connections "
              f"x {a.duration:g} s; {a.max_tokens} tokens/answer", file=sys.stderr)
        res = measure(pool, targets, a)
        if a.profile_gateway and gw_proc is not None:
            _profile(pool, gw_proc.pid, targets["gateway"], a)
    report: dict[str, Any] = compare(res["direct"], res["gateway"])
    report["errors"] = res["direct"]["errors"] + res["gateway"]["errors"]
    report["targets_met"] = {
        "added_p50_le_2ms": bool(report["added_p50_ms"] <= TARGET_ADDED_P50_MS),
        "gateway_rps_ge_1000": bool(report["gateway_rps"] >= TARGET_RPS),
    }
    report["setup"] = {
        "gateway": gw_label, "cpus": os.cpu_count(), "requests": a.requests, "latency_concurrency":
        a.latency_concurrency, "concurrency": a.concurrency, "duration_s": a.duration, "max_tokens": a.max_tokens,
        "loadgen_workers": a.loadgen_workers, "pinned": bool(a.pin), "client": "asyncio+uvloop+httptools raw",
    }
    print(format_table(report))
    print(f"added p50 {report['added_p50_ms']:.3f} ms (target <= {TARGET_ADDED_P50_MS:g}); gateway "
          f"{report['gateway_rps']:.0f} requests/s (target >= {TARGET_RPS:g}); failed requests: {report['errors']}")
    if a.json:
        print(json.dumps(_finite_or_null(report)))
    return 0 if report["errors"] == 0 else 1


def _finite_or_null(x: Any) -> Any:
    """NaN/inf → null, so the JSON line is strict JSON."""
    if isinstance(x, dict):
        return {k: _finite_or_null(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, TimeoutError, ValueError) as e:
        print(f"gateway_overhead: {e}", file=sys.stderr)
        sys.exit(2)
