"""Start the MLflow UI on loopback over a store, ask its REST API for one pipeline's runs, screenshot it.

    python scripts/check_mlflow_ui.py --db mlflow.db [--screenshot mlflow_ui.png] [--port 5055]

Prints the address of the experiment's runs table (MLflow 3 opens its GenAI overview at the bare address),
the parent run of each pipeline and one line per child stage run with its test accuracy. The UI runs in
its own process group, which is stopped as a whole: the server, its uvicorn workers, its job runner and
the huey_consumer processes it restarts.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def api(port: int, path: str, body: dict | None = None) -> dict:
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, default=Path("mlflow.db"))
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                               f"sqlite:///{args.db.resolve()}", "--host", "127.0.0.1", "--port", str(args.port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            print("the MLflow UI did not start")
            return 1
        exp = api(args.port, "experiments/get-by-name?experiment_name=catdog-lab")["experiment"]
        parents = api(args.port, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                 "filter": "tags.run_kind = 'pipeline'",
                                                 "order_by": ["attributes.start_time DESC"]}).get("runs", [])
        print(f"experiment {exp['name']} (id {exp['experiment_id']}): {len(parents)} pipeline run(s); runs table: "
              f"http://127.0.0.1:{args.port}/#/experiments/{exp['experiment_id']}/runs")
        ok = bool(parents)
        for parent in parents:
            pid = parent["info"]["run_id"]
            children = api(args.port, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                      "filter": f"tags.mlflow.parentRunId = '{pid}'",
                                                      "order_by": ["attributes.run_name ASC"]}).get("runs", [])
            print(f"parent {parent['info']['run_name']!r} ({parent['info']['status']}), {len(children)} child runs:")
            for child in children:
                metrics = {m["key"]: m["value"] for m in child["data"].get("metrics", [])}
                acc = metrics.get("test/acc")
                print(f"  {child['info']['run_name']:60s} {child['info']['status']:9s} "
                      f"test/acc={acc if acc is None else round(acc, 4)} params={len(child['data'].get('params', []))}")
        if args.screenshot and parents:
            url = f"http://127.0.0.1:{args.port}/#/experiments/{exp['experiment_id']}/runs"
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                f"--user-data-dir={profile}", "--window-size=1600,1000", "--virtual-time-budget=15000",
                                f"--screenshot={args.screenshot.resolve()}", url], capture_output=True, timeout=120)
            print(f"screenshot of {url}: {args.screenshot} ({args.screenshot.stat().st_size} bytes)")
        return 0 if ok else 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)       # the whole group: `mlflow ui` alone leaves its workers
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
