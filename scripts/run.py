"""`make run`: the broker and the four services on this machine, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from scripts.stack import ROOT, SERVICES, start_stack
from shared.settings import DEV_ADMIN_TOKEN


def main() -> int:
    var_dir = Path(os.environ.get("VAR_DIR", ROOT / "var"))
    broker_port = int(os.environ.get("KAFKA_PORT", "9092"))
    print(f"starting the Tansu broker on 127.0.0.1:{broker_port} and the services…", flush=True)
    stack = start_stack(
        var_dir=var_dir,
        broker_port=broker_port,
        # Joining a consumer group takes half the session timeout on Tansu.
        extra_env={f"{p}KAFKA_SESSION_TIMEOUT_MS": "3000" for p, _ in SERVICES.values()},
    )
    print("\nThe green points platform is up:")
    print(f"  broker     127.0.0.1:{broker_port} (Tansu, memory only)")
    for name in SERVICES:
        print(f"  {name:<10} {stack.url(name)}   API docs: {stack.url(name)}/docs")
    print(f"  databases  SQLite files in {var_dir}/, logs in {var_dir}/*.log")
    if os.environ.get("ORDERS_ADMIN_TOKEN") is None:
        print(f"  admin      Authorization: Bearer {DEV_ADMIN_TOKEN}  (development only)")
    print("\nPress Ctrl-C to stop.", flush=True)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see {var_dir}/{name}.log")
                    stopping = True
            time.sleep(0.5)
    finally:
        print("\nstopping…", flush=True)
        stack.stop()
        print("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
