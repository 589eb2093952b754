"""The served model's latency and throughput: `mlflow models serve` on loopback, one client, for the
scratch and the VGG16 model, single-image and batched requests, next to catdog-predict's rate on the
same photos. Not part of the test suite.

    python benchmarks/serve_bench.py --images 64 --batch 8
    python benchmarks/serve_bench.py --photos <folder of JPEGs> --vgg /path/to/models/finetune.pt

Models and photos as in predict_bench.py (random weights unless given: they change no timing). Each
model is logged and registered in a temporary MLflow store, as a training stage does, and served as the
README serves it. Prints, per model: p50 / p99 latency of a request, requests/s and images/s for
single-image requests and for requests of `--batch` images, and catdog-predict's images/s (the same
decoder and network in one process, batches of its default size).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_bench import model_files, photos  # noqa: E402  (the benchmarks' shared photos and models)

BIN = Path(sys.executable).parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def serve(model_uri: str, env: dict, log: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=open(log, "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return server, port
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    os.killpg(server.pid, 15)
    sys.exit(f"error: the model server did not start: {log.read_text()[-2000:]}")


def post(port: int, cells: list[str]) -> float:
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[c] for c in cells]}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as r:
        rows = json.loads(r.read())["predictions"]
    seconds = time.perf_counter() - started
    assert len(rows) == len(cells) and all(row["error"] == "" for row in rows), rows[:2]
    return seconds


def bench(name: str, model: Path, files: list[Path], args, tmp: Path) -> None:
    import mlflow

    from catdog_lab.config import compose
    from catdog_lab.model_registry import register
    from catdog_lab.predict import Predictor
    from catdog_lab.serving import decoding_config, pyfunc_flavour

    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bench") or client.get_experiment(
        client.create_experiment("bench", artifact_location=(tmp / "art").as_uri()))
    run = client.create_run(experiment.experiment_id)
    registered = register(run.info.run_id, name, model, pyfunc_flavour(model, None, decoding_config(compose().data)))
    env = {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp)),
           "MLFLOW_TRACKING_URI": uri} | \
        {k: os.environ[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS") if k in os.environ}
    cells = [base64.b64encode(path.read_bytes()).decode("ascii") for path in files]

    predictor = Predictor.from_file(model)
    list(predictor.predict(files[:8]))                       # warm-up
    started = time.perf_counter()
    assert all(result["error"] is None for result in predictor.predict(files))
    predict_rate = len(files) / (time.perf_counter() - started)

    server, port = serve(registered["model_uri"], env, tmp / f"{name}.log")
    try:
        post(port, cells[:1])
        post(port, cells[:args.batch])                       # warm-up: first requests build the net's caches
        single = [post(port, [cell]) for cell in cells]
        batches = [cells[i:i + args.batch] for i in range(0, len(cells) - args.batch + 1, args.batch)]
        batched = [post(port, batch) for batch in batches]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
    for kind, times, per in (("single", single, 1), (f"batch {args.batch}", batched, args.batch)):
        print(f"{name:8s} {kind:8s} {len(times):4d} requests  p50 {1000 * percentile(times, 50):7.1f} ms  "
              f"p99 {1000 * percentile(times, 99):7.1f} ms  {len(times) / sum(times):6.1f} req/s  "
              f"{per * len(times) / sum(times):6.1f} img/s", flush=True)
    print(f"{name:8s} catdog-predict (in process, batch {predictor.batch_size}): {predict_rate:.1f} img/s on the "
          f"same {len(files)} photos", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", help="a folder of photos (searched recursively); default: generated photos")
    parser.add_argument("--images", type=int, default=64, help="photos for the scratch model")
    parser.add_argument("--vgg-images", type=int, default=32, help="photos for the VGG16 model (slow on a CPU)")
    parser.add_argument("--batch", type=int, default=8, help="images per batched request")
    parser.add_argument("--scratch", help="a scratch model file (default: random weights)")
    parser.add_argument("--vgg", help="a VGG16 transfer model file (default: built from --weights)")
    parser.add_argument("--weights", help="VGG16 conv-base weights file for the built model")
    parser.add_argument("--skip-vgg", action="store_true")
    args = parser.parse_args(argv)
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; "
          f"one client, requests one after another", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = photos(args, tmp)
        if not files:
            sys.exit(f"error: --photos: no images under {args.photos}")
        models = model_files(args, tmp)
        bench("scratch", models["scratch"], files, args, tmp)
        if "vgg16" in models:
            bench("vgg16", models["vgg16"], files[:args.vgg_images], args, tmp)


if __name__ == "__main__":
    main()
