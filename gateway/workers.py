"""``tandem serve --workers N``: N gateway processes on one port, each a full gateway, under one supervisor.

The supervisor (the process the user started) checks the config (:func:`check_worker_config`), reserves the port,
creates a temporary folder for the workers' metrics and forks N workers. Each worker binds its own listening
socket to the same address with ``SO_REUSEPORT``, so the kernel spreads new connections over the workers (a
shared socket would let whichever worker wakes first accept a whole burst), builds its own
:class:`~gateway.state.Gateway` (database engine, Redis client, backends) and runs uvicorn on that socket.

What the workers share, and how:

- budgets, rate limits and backend cooldowns: Redis (Lua reservations), so they stay exact across workers; without
  ``storage.redis_url`` more than one worker is refused at start, since in-process counters cannot be shared;
- ``/metrics``: prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` = the supervisor's temporary
  folder, removed when it exits); any worker's ``/metrics`` shows the sum over all workers, the dead included;
- the request log: every worker writes its own batches; SQLite files are in WAL mode with a busy timeout
  (``gateway.storage.db``), so several writers wait for each other instead of failing (a write that still fails is
  retried, then spooled), and Postgres takes several writers anyway; an in-memory SQLite database is refused (each
  worker would log into its own).

Signals to the supervisor: SIGTERM / SIGINT stop every worker gracefully (SIGKILL after ``grace_s``); SIGHUP is
forwarded to every worker, and each re-reads the config file (``POST /admin/reload`` reloads only the worker that
happens to answer it). A worker that dies after running ``min_uptime_s`` is restarted; one that dies sooner (a
start-up failure would only repeat) stops them all and the supervisor exits with an error.

What it leaves out: platforms without ``fork`` and Linux's ``SO_REUSEPORT`` balancing; changing N at run time;
in-process model backends are loaded once per worker (N times the memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config import TandemConfig
from gateway.errors import ConfigError
from gateway.metrics import MULTIPROC_ENV


def check_worker_config(cfg: TandemConfig, workers: int) -> None:
    """Raise ConfigError when ``cfg`` cannot be served by ``workers`` processes."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        return
    if not cfg.storage.redis_url:
        raise ConfigError(
            f"--workers {workers} needs storage.redis_url: budgets, rate limits and backend cooldowns are counted "
            "in Redis so that every worker sees the same numbers, and in-process counters cannot be shared between "
            "processes. Set storage.redis_url, or run one worker (and more replicas behind a load balancer).")
    db = cfg.storage.database_url
    if db.startswith("sqlite") and (db.rstrip("/").endswith(":memory:") or db in ("sqlite://", "sqlite:///")):
        raise ConfigError(f"--workers {workers} cannot share an in-memory SQLite request log: every worker would log "
                          "into a database of its own. Use a SQLite file or Postgres.")
    if not hasattr(socket, "SO_REUSEPORT") or not hasattr(os, "fork"):
        raise ConfigError("--workers needs fork and SO_REUSEPORT (Linux); run one worker per process instead")


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes of this user may bind too (SO_REUSEPORT)."""
    sock = _bound(host, port)
    sock.listen(backlog)
    return sock


def _bound(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


def use_multiprocess_metrics(path: str) -> None:
    """Point prometheus_client at ``path`` for the metrics of this process and its children. The library picks its
    value class when it is first imported; if that already happened in this process, switch it here (before any
    metric is built), as the environment variable would have."""
    os.environ[MULTIPROC_ENV] = path
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()


@dataclass
class _Worker:
    index: int
    pid: int
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Forks ``workers`` processes that each run ``run_worker(sock, index)`` and keeps them running."""

    def __init__(self, workers: int, host: str, port: int, run_worker: Callable[[socket.socket, int], None], *,
                 say: Callable[[str], None] = print, grace_s: float = 30.0, min_uptime_s: float = 10.0):
        self.n = workers
        self.host = host
        self.port = port
        self.run_worker = run_worker
        self.say = say
        self.grace_s = grace_s
        self.min_uptime_s = min_uptime_s
        self.workers: dict[int, _Worker] = {}
        self._stop_sig: int | None = None
        self._hup = False

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (returns 0) or a worker failing at start-up (returns 1)."""
        try:  # holds the port (and learns it, for port 0) while workers come and go
            reserve = _bound(self.host, self.port)
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        self.port = reserve.getsockname()[1]
        metrics_dir = tempfile.mkdtemp(prefix="tandem-metrics-")
        use_multiprocess_metrics(metrics_dir)
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        code = 0
        try:
            for i in range(self.n):
                self._spawn(i)
            self.say(f"supervisor {os.getpid()}: {self.n} workers on port {self.port}, metrics in {metrics_dir}")
            code = self._watch()
        finally:
            self._stop_all()
            for s, h in old.items():
                signal.signal(s, h)
            reserve.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
        return code

    def _on_stop(self, sig: int, _frame: object) -> None:
        self._stop_sig = sig

    def _on_hup(self, _sig: int, _frame: object) -> None:
        self._hup = True

    def _spawn(self, index: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never return into the supervisor's code
            code = 0
            try:
                _die_with_parent()
                if os.getppid() != parent:  # the supervisor died before the line above took effect
                    os._exit(1)
                for s in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(s, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop installs its reload handler
                sock = listening_socket(self.host, self.port)
                self.run_worker(sock, index)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException as e:  # noqa: BLE001 - report and exit; the supervisor decides what next
                print(f"tandem: worker {index} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = _Worker(index, pid)

    def _watch(self) -> int:
        while self._stop_sig is None:
            if self._hup:
                self._hup = False
                self.say("SIGHUP: every worker reloads the config")
                for pid in self.workers:
                    _kill(pid, signal.SIGHUP)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid and pid in self.workers:
                w = self.workers.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                if time.monotonic() - w.started < self.min_uptime_s:
                    self.say(f"worker {w.index} (pid {pid}) exited with {code} during start-up: stopping")
                    return 1
                self.say(f"worker {w.index} (pid {pid}) exited with {code}: restarting it")
                self._spawn(w.index)
                continue
            time.sleep(0.1)
        return 0

    def _stop_all(self) -> None:
        for pid in self.workers:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while self.workers and time.monotonic() < deadline:
            for pid in list(self.workers):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.workers.pop(pid, None)
            time.sleep(0.05)
        for pid in list(self.workers):
            _kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.workers.pop(pid, None)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (even by SIGKILL), so no orphan keeps the port."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


_PR_SET_PDEATHSIG = 1


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
