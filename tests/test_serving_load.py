"""The served model under load and bad requests: `mlflow models serve` on loopback, 8 clients x 100 requests.

A tiny model (the book's convnet at 48 px, untrained: the answers are compared with catdog-predict's
decoder and network in this process, not with the truth) is logged and registered as the pipeline does,
then served as the README serves it (the venv's bin on the server's PATH, nothing activated). Good
requests must be answered with the same probabilities; bad ones (broken base64, a text file, a PNG header
claiming 50000 x 50000 pixels, an empty body, wrong JSON shapes, a 20 MB body) must get a 4xx with a
one-line reason; nothing may get a 5xx, and the server must still answer at the end.
"""
from __future__ import annotations

import base64
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import make_photo

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
CLIENTS, REQUESTS = 8, 100
DEADLINE_S = 900                    # the whole test, server start included


def _png_header(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR chunk claiming width x height RGB pixels, then IEND: no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def _table(*cells) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[cell] for cell in cells]}}).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def served_model(tmp_path):
    """(port, server process, predictor) for a registered tiny model served on 127.0.0.1."""
    import mlflow

    from catdog_lab.config import compose
    from catdog_lab.model_registry import register
    from catdog_lab.models.factory import build_from_arch, save_model
    from catdog_lab.predict import Predictor
    from catdog_lab.serving import decoding_config, pyfunc_flavour, start_server, stop_server
    from catdog_lab.settings import model_arch

    cfg = compose(["data.image_size=48"])
    arch = model_arch(cfg, "scratch")
    model = tmp_path / "scratch.pt"
    save_model(model, "scratch", arch, build_from_arch(arch))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("load", artifact_location=(tmp_path / "art").as_uri()))
    registered = register(run.info.run_id, "scratch", model, pyfunc_flavour(model, None, decoding_config(cfg.data)))

    # as the README serves it: the venv's bin on the server's PATH (it starts uvicorn by name), no activation
    env = {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)),
           "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"} | \
        ({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {})
    server, port = start_server(registered["model_uri"], env, tmp_path / "server.log")
    try:
        yield port, server, Predictor.from_file(model, max_pixels=cfg.data.max_image_pixels,
                                                min_side=cfg.data.min_image_side, max_aspect=cfg.data.max_aspect_ratio)
    finally:
        stop_server(server)


def _post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=180) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_served_model_under_load_and_bad_requests(served_model, tmp_path):
    port, server, predictor = served_model
    photos = [make_photo(tmp_path / "cat.jpg", "cat", 11, size=(90, 70)),
              make_photo(tmp_path / "dog.png", "dog", 12, size=(64, 64), fmt="PNG")]
    photo_bytes = [path.read_bytes() for path in photos]
    want = [result["p_dog"] for result in predictor.predict(photo_bytes)]

    good = {"one cat": ([0], _table(_b64(photo_bytes[0]))),
            "cat and dog": ([0, 1], _table(*map(_b64, photo_bytes))),
            "dog twice": ([1, 1], _table(_b64(photo_bytes[1]), _b64(photo_bytes[1])))}
    big = os.urandom(15 * 1024 * 1024)                        # base64: a 20 MB body of something not an image
    bad = {"broken base64": _table("this is not base64!"),
           "a text file": _table(_b64(b"Dear diary,\nnot a photo at all.\n" * 20)),
           "50000x50000 PNG header": _table(_b64(_png_header(50000, 50000))),
           "empty body": b"",
           "wrong JSON shape": json.dumps({"dataframe_split": {"columns": ["photo"], "data": [["abc"]]}}).encode(),
           "not JSON": b"{\"dataframe_split\": [1, 2,",
           "a JSON list": b"[1, 2, 3]",
           "no rows": _table()}
    assert len(_table(_b64(big))) > 20 * 1000 * 1000

    def client(index: int) -> list[tuple[str, str, int, bytes]]:
        out = []
        for i in range(REQUESTS):
            if i == 50:                                          # one 20 MB body per client
                kind, body = "20 MB body", _table(_b64(big))
                out.append(("bad", kind, *_post(port, body)))
                continue
            n = index * REQUESTS + i
            if n % 2:
                kind = list(good)[n // 2 % len(good)]
                out.append(("good", kind, *_post(port, good[kind][1])))
            else:
                kind = list(bad)[n // 2 % len(bad)]
                out.append(("bad", kind, *_post(port, bad[kind])))
        return out

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [answer for batch in pool.map(client, range(CLIENTS), timeout=DEADLINE_S) for answer in batch]
    seconds = time.monotonic() - started

    failures, good_ok, bad_4xx, server_errors = [], 0, 0, 0
    for expect, kind, status, body in answers:
        server_errors += status >= 500
        if expect == "good":
            rows = json.loads(body)["predictions"] if status == 200 else None
            ok = rows is not None and [row["p_dog"] for row in rows] == pytest.approx(
                [want[i] for i in good[kind][0]], abs=1e-6) and all(row["error"] == "" for row in rows)
            good_ok += ok
            if not ok:
                failures.append(f"good {kind}: HTTP {status} {body[:200]!r}")
        else:
            try:
                reason = json.loads(body)["message"]
            except (ValueError, KeyError, TypeError):
                reason = None
            ok = 400 <= status < 500 and isinstance(reason, str) and "\n" not in reason and 0 < len(reason) <= 300
            bad_4xx += ok
            if not ok:
                failures.append(f"bad {kind}: HTTP {status} {body[:300]!r}")
    n_good = sum(expect == "good" for expect, *_ in answers)
    print(f"\nload test: {len(answers)} requests from {CLIENTS} clients in {seconds:.1f} s; "
          f"good answered correctly {good_ok}/{n_good}; bad rejected with a 4xx and a one-line reason "
          f"{bad_4xx}/{len(answers) - n_good}; 5xx: {server_errors}")
    reasons = {}
    for expect, kind, status, body in answers:
        if expect == "bad" and kind not in reasons:
            reasons[kind] = f"HTTP {status}: {json.loads(body)['message'] if body[:1] == b'{' else body[:100]}"
    print("\n".join(f"  {kind}: {reason}" for kind, reason in reasons.items()))
    assert not failures, "\n".join(sorted(set(failures))[:20])
    assert len(answers) == CLIENTS * REQUESTS and server_errors == 0
    assert server.poll() is None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as r:
        assert r.status == 200
    status, body = _post(port, good["cat and dog"][1])              # still answering correctly
    assert status == 200 and [row["p_dog"] for row in json.loads(body)["predictions"]] == pytest.approx(want, abs=1e-6)
