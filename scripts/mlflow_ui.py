"""The MLflow UI on the project's store: prints the address of the runs table, and Ctrl-C stops all of it.

    .venv/bin/python scripts/mlflow_ui.py [--db mlflow.db] [--port 5000]

Why not `mlflow ui` alone: MLflow 3 opens on its GenAI overview, not on the runs, and Ctrl-C stops its
web server but leaves its job runner and `huey_consumer` processes running (the runner restarts them in a
loop). This starts `mlflow ui` (with the venv's bin on its PATH, nothing activated) in a process group of
its own and, on Ctrl-C or SIGTERM, sends SIGTERM to the whole group, then SIGKILL to what is left.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from catdog_lab.serving import stop_server

EXPERIMENT = "catdog-lab"          # tracking.experiment in conf/tracking/mlflow.yaml


def _interrupt(signum, frame):
    """SIGTERM: stop like Ctrl-C."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path("mlflow.db"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    # one user on this machine: one worker starts sooner and holds one process, not mlflow's default 4
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default: 1)")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([str(bin_dir / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{args.db.resolve()}",
                               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)],
                              env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, _interrupt)
    base = f"http://{args.host}:{args.port}"
    print(f"starting the MLflow UI on {base} for {args.db} (its address follows once it answers)", flush=True)
    try:
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    print("error: the MLflow UI exited", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        url = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                experiment = json.loads(response.read())["experiment"]["experiment_id"]
            print(f"MLflow UI: {base}/#/experiments/{experiment}/runs   (Ctrl-C stops it and its workers)", flush=True)
        except OSError:
            print(f"MLflow UI: {base} (no {EXPERIMENT!r} experiment in {args.db} yet; Ctrl-C stops it)", flush=True)
        server.wait()
        return server.returncode or 0
    except KeyboardInterrupt:
        left = stop_server(server)
        print("stopped the MLflow UI and its workers" + (f" ({len(left)} needed SIGKILL)" if left else ""))
        return 0


if __name__ == "__main__":
    sys.exit(main())
