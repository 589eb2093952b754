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
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_bench import add_photo_and_model_args, rate, run_models, timed  # noqa: E402  (the benchmarks' shared photos and models)

BIN = Path(sys.executable).parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def post(port: int, cells: list[str]) -> float:
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[c] for c in cells]}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    answer = []

    def request_once() -> None:
        with urllib.request.urlopen(request, timeout=300) as response:
            answer.append(response.read())

    seconds = timed(request_once)
    rows = json.loads(answer[0])["predictions"]
    assert len(rows) == len(cells) and all(row["error"] == "" for row in rows), rows[:2]
    return seconds


def bench(name: str, model: Path, files: list[Path], args, tmp: Path) -> None:
    import mlflow

    from catdog_lab.config import compose
    from catdog_lab.model_registry import register
    from catdog_lab.predict import Predictor
    from catdog_lab.serving import decoding_config, pyfunc_flavour, start_server, stop_server

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
    results = []
    predict_rate = rate(len(files), timed(lambda: results.extend(predictor.predict(files))))
    assert all(result["error"] is None for result in results)

    try:
        server, port = start_server(registered["model_uri"], env, tmp / f"{name}.log")
    except RuntimeError as e:
        sys.exit(f"error: {e}")
    try:
        post(port, cells[:1])
        post(port, cells[:args.batch])                       # warm-up: first requests build the net's caches
        single = [post(port, [cell]) for cell in cells]
        batches = [cells[i:i + args.batch] for i in range(0, len(cells) - args.batch + 1, args.batch)]
        batched = [post(port, batch) for batch in batches]
    finally:
        stop_server(server)
    for kind, times, per in (("single", single, 1), (f"batch {args.batch}", batched, args.batch)):
        print(f"{name:8s} {kind:8s} {len(times):4d} requests  p50 {1000 * percentile(times, 50):7.1f} ms  "
              f"p99 {1000 * percentile(times, 99):7.1f} ms  {len(times) / sum(times):6.1f} req/s  "
              f"{per * len(times) / sum(times):6.1f} img/s", flush=True)
    print(f"{name:8s} catdog-predict (in process, batch {predictor.batch_size}): {predict_rate:.1f} img/s on the "
          f"same {len(files)} photos", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_photo_and_model_args(parser, images=64, vgg_images=32)
    parser.add_argument("--batch", type=int, default=8, help="images per batched request")
    args = parser.parse_args(argv)
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; "
          f"one client, requests one after another", flush=True)
    run_models(args, bench)


if __name__ == "__main__":
    main()
