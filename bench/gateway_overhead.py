"""Gateway overhead benchmark: latency and throughput of a fast upstream stub, direct and through a gateway.

In one run (same machine state) it starts the upstream stub (``bench.upstream_stub``, its own process), starts
``tandem serve`` against it (or uses ``--gateway-url`` for any other OpenAI-compatible gateway, e.g. a LiteLLM
proxy, that routes ``--gateway-model`` to the same stub), warms both up, then measures with load-generator worker
processes (``bench.loadgen``, raw asyncio + httptools client), alternating direct and gateway in each phase:

1. latency, non-streaming: ``--requests`` requests, ``--latency-concurrency`` in flight (1: sequential) → p50/p99;
2. latency, streaming: time to first chunk (TTFT) and total, p50/p99;
3. max throughput, non-streaming: ``--concurrency`` connections for ``--duration`` s → requests/s;
4. max throughput, streaming → streams/s.

Then a concurrency sweep (``bench.levels``): for each mode (non-streaming, streaming) and each of ``--levels``
(default 1, 16, 64), ``--level-duration`` s against direct, then the gateway (and the baseline gateway, if any),
``--level-rounds`` times; JSON ``levels``: ``{mode, concurrency, rps, p50_ms, p99_ms, p999_ms, added_p50_ms,
added_p99_ms, errors, samples, direct}`` per level.

It prints tables (direct vs gateway, ratios, added ms; the sweep) and, with ``--json``, ends with one JSON line holding
at least ``added_p50_ms``, ``added_p99_ms``, ``gateway_rps``, ``direct_rps`` and ``levels``. Targets (2 cores, one
gateway worker): added p50 ≤ 2 ms and ≥ 1,000 requests/s non-streaming; in the sweep, non-streaming at 16
connections p99 ≤ 3× p50, p99.9 ≤ 5× p50 and ≥ 2,000 requests/s, at 1 connection added p99 ≤ 2 ms;
``targets_met`` says whether this run met them. Comparisons in the same run: ``--baseline-serve-args "--runtime
default"`` starts a second tandem with other flags, ``--baseline-url`` sweeps any running gateway as the baseline
(JSON ``baseline_levels``); ``--gateway-workers N`` runs ``tandem serve --workers N`` (with a throwaway
redis-server). ``--profile-gateway out.svg`` adds one more throughput run (non-streaming; ``--profile-stream``:
streaming) under ``py-spy record`` (not counted in the figures).

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
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.levels import format_levels, run_levels  # noqa: E402
from bench.loadgen import Job, JobResult, LoadgenPool, Target, parse_target, summarize  # noqa: E402
from bench.upstream_stub import start_stub  # noqa: E402
from evals.gateway_process import free_port  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_ADDED_P50_MS = 2.0
TARGET_RPS = 1000.0
TARGET_TAIL_P99, TARGET_TAIL_P999 = 3.0, 5.0  # at 16 connections, non-streaming: p99 and p99.9 over p50
TARGET_RPS_C16 = 2000.0
TARGET_ADDED_P99_C1_MS = 2.0


# ---------------------------------------------------------------------------------------------------- processes


def gateway_config(port: int, stub_url: str, workdir: Path, redis_url: str | None = None) -> str:
    """The YAML config of a tandem gateway with one backend, ``stub``, on the upstream stub."""
    redis = f", redis_url: \"{redis_url}\"" if redis_url else ""
    return (
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        f"storage: {{database_url: \"sqlite:///{workdir}/bench.db\", log_prompts: false, "
        f"spool_dir: \"{workdir}/spool\"{redis}}}\n"
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
def tandem_gateway(stub_url: str, ready_timeout_s: float, serve_args: Sequence[str] = (),
                   redis_url: str | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run ``tandem serve --config <tmp.yaml> --port <free> [serve_args]`` against the stub; yield the process and
    its URL."""
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        cfg = work / "bench.yaml"
        cfg.write_text(gateway_config(port, stub_url, work, redis_url))
        log = open(work / "gateway.log", "wb")  # noqa: SIM115 - closed below
        launcher = "import sys; from evals.command import main; sys.argv[0] = 'tandem'; sys.exit(main())"
        cmd = [sys.executable, "-c", launcher, "serve", "--config", str(cfg), "--port", str(port), *serve_args]
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


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Pin ``pid`` and every process under it (``--workers``: the supervisor's workers)."""
    pin(pid, cpus)
    for child in _children(pid):
        pin_tree(child, cpus)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(x) for x in (task / "children").read_text().split()]
    return out


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` (no persistence) on a free loopback port, for ``--gateway-workers`` > 1."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("--gateway-workers > 1 needs redis-server on PATH (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-redis-") as tmp:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                 "no", "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(proc)


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
    p.add_argument("--levels", type=_int_list, default=[1, 16, 64],
                   help="concurrency levels of the sweep, comma-separated (empty: no sweep)")
    p.add_argument("--level-duration", type=float, default=2.0, help="seconds per level, side and round")
    p.add_argument("--level-rounds", type=int, default=1, help="direct/gateway alternations per level")
    p.add_argument("--serve-args", default="", help="extra flags for tandem serve, e.g. \"--gc default\"")
    p.add_argument("--baseline-serve-args", metavar="ARGS",
                   help="also start a second tandem serve with these flags and sweep it alternately with the first "
                        "(JSON: baseline_levels), e.g. \"--gc default\"")
    p.add_argument("--baseline-url", help="an already-running gateway (OpenAI base URL) to sweep as the baseline "
                                          "instead, e.g. another build of tandem or another gateway")
    p.add_argument("--gateway-workers", type=int, default=1,
                   help="tandem serve --workers N (N > 1 starts a throwaway redis-server for it)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    return p.parse_args(argv)


def _int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    serve_args = [*shlex.split(a.serve_args), *(["--workers", str(a.gateway_workers)] if a.gateway_workers > 1
                                                 else [])]
    with contextlib.ExitStack() as stack:
        stub_proc = None
        stub_url = a.stub_url
        if not stub_url:
            stub_proc, stub_url = start_stub(a.max_tokens, a.chunk_delay_ms)
            stack.callback(_stop, stub_proc)
        redis_url = stack.enter_context(redis_server()) if a.gateway_workers > 1 and not a.gateway_url else None
        gw_procs: list[subprocess.Popen[bytes]] = []
        if a.gateway_url:
            gw_url, gw_label = a.gateway_url, a.gateway_url
        else:
            gw_proc, gw_url = stack.enter_context(tandem_gateway(stub_url, a.ready_timeout, serve_args, redis_url))
            gw_procs.append(gw_proc)
            n = a.gateway_workers
            gw_label = f"tandem serve ({n} worker{'s' if n > 1 else ''}{', ' + a.serve_args if a.serve_args else ''})"
        base_url = a.baseline_url
        if a.baseline_serve_args is not None and base_url is None:
            base_proc, base_url = stack.enter_context(tandem_gateway(
                stub_url, a.ready_timeout, shlex.split(a.baseline_serve_args)))
            gw_procs.append(base_proc)
        pool = stack.enter_context(LoadgenPool(a.loadgen_workers))
        ncpu = os.cpu_count() or 1
        if a.pin and ncpu > 1 and gw_procs:
            for p in gw_procs:
                pin_tree(p.pid, {0})
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
        gateways = {"gateway": targets["gateway"]}
        if base_url is not None:
            gateways["baseline"] = parse_target(base_url, a.gateway_model, a.gateway_key)
        swept = run_levels(pool, targets["direct"], gateways, a.levels, a.level_duration, a.level_rounds,
                           a.max_tokens) if a.levels else {}
        if a.profile_gateway and gw_procs:
            _profile(pool, gw_procs[0].pid, targets["gateway"], a)
    levels = swept.get("gateway", [])
    report: dict[str, Any] = compare(res["direct"], res["gateway"])
    report["errors"] = res["direct"]["errors"] + res["gateway"]["errors"] + sum(
        r["errors"] + r["direct"]["errors"] for rows in swept.values() for r in rows)
    report["levels"] = levels
    if "baseline" in swept:
        report["baseline_levels"] = swept["baseline"]
        report["baseline"] = a.baseline_url or f"tandem serve {a.baseline_serve_args}"
    report["targets_met"] = {
        "added_p50_le_2ms": bool(report["added_p50_ms"] <= TARGET_ADDED_P50_MS),
        "gateway_rps_ge_1000": bool(report["gateway_rps"] >= TARGET_RPS),
        **level_targets(levels),
    }
    report["setup"] = {
        "gateway": gw_label, "cpus": os.cpu_count(), "requests": a.requests, "latency_concurrency":
        a.latency_concurrency, "concurrency": a.concurrency, "duration_s": a.duration, "max_tokens": a.max_tokens,
        "loadgen_workers": a.loadgen_workers, "pinned": bool(a.pin), "client": "asyncio+uvloop+httptools raw",
        "levels": a.levels, "level_duration_s": a.level_duration, "level_rounds": a.level_rounds,
        "gateway_workers": a.gateway_workers, "serve_args": a.serve_args,
    }
    print(format_table(report))
    for name, rows in swept.items():
        label = gw_label if name == "gateway" else f"baseline: {a.baseline_url or 'tandem serve ' + a.baseline_serve_args}"
        print(f"levels, {label}:\n{format_levels(rows)}")
    print(f"added p50 {report['added_p50_ms']:.3f} ms (target <= {TARGET_ADDED_P50_MS:g}); gateway "
          f"{report['gateway_rps']:.0f} requests/s (target >= {TARGET_RPS:g}); failed requests: {report['errors']}")
    if levels:
        print("level targets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in level_targets(levels).items()))
    if a.json:
        print(json.dumps(_finite_or_null(report)))
    return 0 if report["errors"] == 0 else 1


def level_targets(levels: list[dict[str, Any]]) -> dict[str, bool]:
    """The no-stall targets on the sweep's rows (only those whose level was measured)."""
    by = {(r["mode"], r["concurrency"]): r for r in levels}
    out: dict[str, bool] = {}
    if (r := by.get(("nonstream", 16))) is not None:
        out["c16_p99_le_3x_p50"] = bool(r["p99_ms"] <= TARGET_TAIL_P99 * r["p50_ms"])
        out["c16_p999_le_5x_p50"] = bool(r["p999_ms"] <= TARGET_TAIL_P999 * r["p50_ms"])
        out["c16_rps_ge_2000"] = bool(r["rps"] >= TARGET_RPS_C16)
    if (r := by.get(("nonstream", 1))) is not None:
        out["c1_added_p99_le_2ms"] = bool(r["added_p99_ms"] <= TARGET_ADDED_P99_C1_MS)
    return out


def _finite_or_null(x: Any) -> Any:
    """NaN/inf → null, so the JSON line is strict JSON."""
    if isinstance(x, dict):
        return {k: _finite_or_null(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_or_null(v) for v in x]
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
