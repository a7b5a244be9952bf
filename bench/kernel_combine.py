"""Benchmark of ``logit_kernels.combine``: fused CPU path vs the reference, and bandwidth against a memory copy.

CPU (2 threads): reference and fused path on V=151,936, M=3, B=32 (by default), greedy and greedy+logprobs; the
fused path's bytes read per second as a fraction of a same-size ``copy_`` (whose rate counts bytes read + written).
GPU (when CUDA and Triton are present): the Triton kernel's bytes read per second as a fraction of a same-size
device-to-device copy (read + written; L2 flushed between runs by ``triton.testing.do_bench``) at B = 32 and 64,
(``gpu_fraction_of_copy_b32``/``_b64``: kernel time by CUDA-graph replay over 4 rotating input copies, so
launch overhead and L2 hits are out; ``gpu_us_*``: eager calls, Python overhead included), and latency at B = 1
against the unfused torch sequence (the reference on the GPU). With ``--json`` the last line
is one JSON object. What it leaves out: end-to-end decoding speed (bench/ of collab measures that).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from logit_kernels import combine  # noqa: E402
from logit_kernels.reference import combine_reference  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def wall(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rotating(fn: Callable[[int], object], n: int = 4) -> Callable[[], object]:
    """A no-argument function that calls ``fn(0)``, ``fn(1)``, … ``fn(n-1)``, ``fn(0)``, … in turn."""
    state = [0]

    def call() -> object:
        state[0] = (state[0] + 1) % n
        return fn(state[0])

    return call


def bench_cpu(v: int, m: int, b: int, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    torch.set_num_threads(2)
    x = (torch.randn(m, b, v) * 3).to(dtype)
    w = [1.0 / m] * m
    nbytes = x.numel() * x.element_size()
    out: dict[str, float] = {}
    for label, kw in [("greedy", {}), ("logprobs", {"return_logprobs": True}), ("sample", {"mode": "sample"})]:
        t_ref = wall(lambda kw=kw: combine_reference(x, w, **kw), max(2, repeats // 3))
        t_cpu = wall(lambda kw=kw: combine(x, w, backend="cpu", **kw), repeats)
        out[f"cpu_ref_ms_{label}"] = t_ref * 1e3
        out[f"cpu_fused_ms_{label}"] = t_cpu * 1e3
        out[f"cpu_speedup_{label}"] = t_ref / t_cpu
    src, dst = x.clone(), torch.empty_like(x)
    t_copy = wall(lambda: dst.copy_(src), repeats)
    out["cpu_copy_GBps_read_plus_write"] = 2 * nbytes / t_copy / 1e9
    out["cpu_fused_GBps_read"] = nbytes / (out["cpu_fused_ms_greedy"] / 1e3) / 1e9
    out["cpu_speedup"] = out["cpu_speedup_greedy"]
    out["cpu_fraction_of_copy"] = out["cpu_fused_GBps_read"] / out["cpu_copy_GBps_read_plus_write"]
    return out


def bench_gpu(v: int, m: int, dtype: torch.dtype) -> dict[str, float]:
    import triton.testing

    from logit_kernels.triton_combine import available

    if not available():
        return {}
    out: dict[str, float] = {"gpu_name": torch.cuda.get_device_name()}  # type: ignore[dict-item]
    w = [1.0 / m] * m
    for b in (32, 64, 256):
        x = (torch.randn(m, b, v, device="cuda") * 3).to(dtype)
        nbytes = x.numel() * x.element_size()
        dst = torch.empty_like(x)
        t_copy = triton.testing.do_bench(lambda dst=dst, x=x: dst.copy_(x), rep=200) / 1e3
        copy_bw = 2 * nbytes / t_copy
        out[f"gpu_copy_GBps_read_plus_write_b{b}"] = copy_bw / 1e9
        for label, kw in [("greedy", {}), ("logprobs", {"return_logprobs": True}), ("sample", {"mode": "sample"})]:
            t = triton.testing.do_bench(lambda x=x, kw=kw: combine(x, w, **kw), rep=200) / 1e3
            out[f"gpu_us_{label}_b{b}"] = t * 1e6
            out[f"gpu_fraction_of_copy_{label}_b{b}"] = (nbytes / t) / copy_bw
        t_ref = triton.testing.do_bench(lambda x=x: combine_reference(x, w), rep=200) / 1e3
        out[f"gpu_unfused_us_greedy_b{b}"] = t_ref * 1e6
        # kernel time without Python/launch overhead: CUDA-graph replay, rotating over 4 input copies (> L2)
        xs = [x] + [x.clone() for _ in range(3)]
        dsts = [torch.empty_like(x) for _ in range(4)]
        wt = torch.tensor(w, device="cuda")
        t_gcopy = triton.testing.do_bench_cudagraph(rotating(lambda i, d=dsts, s=xs: d[i].copy_(s[i])), rep=100) / 1e3
        gcopy_bw = 2 * nbytes / t_gcopy
        out[f"gpu_graph_copy_GBps_read_plus_write_b{b}"] = gcopy_bw / 1e9
        for label, kw in [("greedy", {}), ("logprobs", {"return_logprobs": True}), ("sample", {"mode": "sample"})]:
            fn = rotating(lambda i, kw=kw, s=xs, w2=wt: combine(s[i], w2, **kw))
            t = triton.testing.do_bench_cudagraph(fn, rep=100) / 1e3
            out[f"gpu_graph_us_{label}_b{b}"] = t * 1e6
            out[f"gpu_graph_fraction_of_copy_{label}_b{b}"] = (nbytes / t) / gcopy_bw
    x1 = (torch.randn(m, 1, v, device="cuda") * 3).to(dtype)
    sync = torch.cuda.synchronize
    for label, kw in [("greedy", {}), ("sample", {"mode": "sample", "return_logprobs": True})]:
        out[f"gpu_latency_us_b1_{label}"] = wall(lambda kw=kw: combine(x1, w, **kw), 200, sync) * 1e6
        out[f"gpu_unfused_latency_us_b1_{label}"] = wall(lambda kw=kw: combine_reference(x1, w, **kw), 200, sync) * 1e6
    out["gpu_fraction_of_copy_b32"] = out["gpu_graph_fraction_of_copy_greedy_b32"]
    out["gpu_fraction_of_copy_b64"] = out["gpu_graph_fraction_of_copy_greedy_b64"]
    return out


def sweep_gpu(v: int, m: int) -> list[dict[str, object]]:
    """Triton kernel time (CUDA-graph replay) and fraction of copy per launch shape and mode, B ∈ {32, 64}, bf16/fp32."""
    import triton.testing

    from logit_kernels.triton_combine import LaunchConfig, combine_triton

    shapes = [(1024, 4, 8), (2048, 8, 4), (1024, 8, 8), (2048, 4, 8), (4096, 8, 4)]
    rows: list[dict[str, object]] = []
    w = torch.full((m,), 1.0 / m, device="cuda")
    for dt_name in ("bfloat16", "float32"):
        for b in (32, 64):
            xs = [(torch.randn(m, b, v, device="cuda") * 3).to(DTYPES[dt_name]) for _ in range(4)]
            dsts = [torch.empty_like(x) for x in xs]
            nbytes = xs[0].numel() * xs[0].element_size()
            t_copy = triton.testing.do_bench_cudagraph(rotating(lambda i, d=dsts, s=xs: d[i].copy_(s[i])), rep=50)
            for mode, kw in [("greedy", {}), ("logprobs", {"return_logprobs": True}), ("sample", {"mode": "sample"})]:
                for block, warps, pps in shapes:
                    cfg = LaunchConfig(block, warps, pps)
                    fn = rotating(lambda i, s=xs, c=cfg, kw=kw: combine_triton(s[i], w, launch=c, **kw))
                    t = triton.testing.do_bench_cudagraph(fn, rep=50)
                    frac = (nbytes / t) / (2 * nbytes / t_copy)
                    rows.append({"dtype": dt_name, "b": b, "mode": mode, "block": block, "warps": warps, "pps": pps,
                                 "us": round(t * 1e3, 2), "fraction_of_copy": round(frac, 3)})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--v", type=int, default=151936)
    ap.add_argument("--m", type=int, default=3)
    ap.add_argument("--b", type=int, default=32)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU part (GPU only)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--sweep", action="store_true", help="GPU only: compare Triton launch shapes, then exit")
    args = ap.parse_args(argv)
    if args.sweep:
        rows = sweep_gpu(args.v, args.m)
        for key in sorted({(r["dtype"], r["b"], r["mode"]) for r in rows}):
            best = max((r for r in rows if (r["dtype"], r["b"], r["mode"]) == key), key=lambda r: r["fraction_of_copy"])
            print("best", json.dumps(best))
        return 0
    dtype = DTYPES[args.dtype]
    res: dict[str, object] = {"v": args.v, "m": args.m, "b": args.b, "dtype": args.dtype}
    if not args.no_cpu:
        res.update(bench_cpu(args.v, args.m, args.b, dtype, args.repeats))
    if torch.cuda.is_available():
        try:
            for dt_name in ("bfloat16", "float32"):
                res.update({f"{k}_{dt_name}" if dt_name != "bfloat16" else k: val
                            for k, val in bench_gpu(args.v, args.m, DTYPES[dt_name]).items()})  # fmt: skip
        except ImportError as exc:
            res["gpu_error"] = f"triton missing: {exc}"
    for k, val in res.items():
        print(f"{k:45s} {val:.4g}" if isinstance(val, float) else f"{k:45s} {val}")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
