"""`dvc repro` of a git commit on 12 generated photos per class, and a print of what it produced.

A refactor check: run it on the commit before and the commit after, and diff the two outputs. Every metric
except the clocks (seconds, wall time, throughput) and the sha256 of every model's weights must be identical
(training on the CPU is deterministic: tests/test_determinism.py).

    python scripts/tiny_repro.py --ref 0a9fff1 --json /tmp/before.json
    python scripts/tiny_repro.py --ref HEAD --json /tmp/after.json --diff /tmp/before.json
    python scripts/tiny_repro.py --ref HEAD --log /tmp/repro.log     # + the warning lines `dvc repro` printed
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# metric keys that measure time or speed, not the result: they differ between any two runs
CLOCKS = ("seconds", "wall_time", "fit_seconds", "per_second", "device")
TINY = ["data.split.train=6", "data.split.validation=3", "data.split.test=3", "data.image_size=48",
        "backbone.weights=none", "trainer.progress_bar=false", "profile=smoke"]


def export(ref: str, dest: Path) -> None:
    """The commit's tracked files (what a clone has), extracted with tarfile's safe filter."""
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=PROJECT_ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")


def compose_params(repo: Path, overrides: list[str]) -> str:
    """params.yaml as that commit's own conf/ composes it (run in a child: the commit's catdog_lab)."""
    code = ("import sys, yaml; from omegaconf import OmegaConf; from catdog_lab.config import compose; "
            "print(yaml.safe_dump(OmegaConf.to_container(compose(sys.argv[1:]), resolve=True), sort_keys=False))")
    return subprocess.run([sys.executable, "-c", code, *overrides], cwd=repo, check=True, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(repo / "src")}).stdout


def weights_hash(path: Path) -> str:
    """sha256 over a model file's architecture record and tensors (the file's bytes also hold the temporary
    folder's paths, which differ between any two runs)."""
    import torch

    bundle = torch.load(path, map_location="cpu", weights_only=True)
    # the backbone's config record (arch["backbone_spec"], from issue 19 on) describes a net that "backbone"
    # already names; left out, so that commits before and after it compare
    arch = {k: v for k, v in bundle["arch"].items() if k != "backbone_spec"}
    digest = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
    for name in ("state_dict", "last_state_dict"):
        for key, tensor in sorted(bundle.get(name, {}).items()):
            digest.update(key.encode() + tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def results(repo: Path) -> dict:
    metrics = {}
    for path in sorted((repo / "metrics").glob("*.json")):
        values = json.loads(path.read_text())
        metrics[path.stem] = {k: v for k, v in values.items() if not any(c in k for c in CLOCKS)}
    models = {p.name: weights_hash(p) for p in sorted((repo / "models").glob("*.pt"))}
    return {"metrics": metrics, "models": models}


def compare_results(before: dict, after: dict) -> tuple[list[str], list[str]]:
    """(differences, metrics added): every model hash and every metric the earlier run recorded must be
    equal; a metric key only the later commit writes (a new figure) is listed apart, a stage or model
    missing on either side is a difference."""
    diffs, added = [], []
    for name in sorted(set(before["models"]) | set(after["models"])):
        if before["models"].get(name) != after["models"].get(name):
            diffs.append(f"models.{name}: {before['models'].get(name)} -> {after['models'].get(name)}")
    for stage in sorted(set(before["metrics"]) | set(after["metrics"])):
        old, new = before["metrics"].get(stage), after["metrics"].get(stage)
        if old is None or new is None:
            diffs.append(f"metrics.{stage}: {old} -> {new}")
            continue
        diffs += [f"metrics.{stage}.{key}: {old[key]} -> {new.get(key)}" for key in sorted(old)
                  if new.get(key) != old[key]]
        added += [f"{stage}.{key}" for key in sorted(set(new) - set(old))]
    return diffs, added


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default="HEAD",
                   help="the git commit to run (default HEAD; uncommitted edits are not in it)")
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--diff", type=Path, help="an earlier --json output: print every difference, exit 1 if any")
    p.add_argument("--log", type=Path, help="write what `dvc repro` printed (stdout + stderr) here, and print its "
                   "warning lines and their count")
    args = p.parse_args()
    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    from conftest import make_dataset  # the tests' generated photos

    # the commit, fixed now: HEAD may move while the pipeline runs
    commit = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=PROJECT_ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="tiny-repro-") as tmp:
        tmp = Path(tmp)
        repo = tmp / "repo"
        export(commit, repo)
        raw = make_dataset(tmp / "raw", per_class=12)
        (repo / "params.yaml").write_text(compose_params(repo, [f"data.source.path={raw}", *TINY]))
        env = {**os.environ, "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
               "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", args.ref]):
            subprocess.run(cmd, cwd=repo, env=env, check=True)
        dvc = Path(sys.executable).parent / "dvc"
        proc = subprocess.run([str(dvc), "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if args.log:
            args.log.write_text(proc.stdout)
            # DVC's "WARNING: ...", Python's "file.py:12: UserWarning: ..." and Lightning's "file.py:12: ..."
            warned = [line for line in proc.stdout.splitlines()
                      if "warn" in line.lower() or re.match(r"^\S+\.py:\d+: ", line)]
            print(f"{len(warned)} warning line(s) in `dvc repro`'s output:" + "".join(f"\n  {w}" for w in warned))
        if proc.returncode:
            print(proc.stdout[-6000:])
            return proc.returncode
        found = {"ref": commit, **results(repo)}
    print(json.dumps(found, indent=1))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))
    if args.diff:
        before = json.loads(args.diff.read_text())
        diffs, added = compare_results(before, found)
        if added:      # a figure the earlier commit did not record is new, not moved: listed apart
            print(f"\n{len(added)} metric(s) only in {found['ref']}: {', '.join(added)}")
        print(f"\n{len(diffs)} difference(s) from {before['ref']} to {found['ref']}"
              + "".join(f"\n  {d}" for d in diffs))
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
