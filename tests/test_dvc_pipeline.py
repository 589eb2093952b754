"""End to end: `dvc repro` on a tiny generated dataset in a temporary copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from catdog_lab.config import PROJECT_ROOT, compose
from catdog_lab.registry import TRAINING_STAGES
from conftest import make_dataset
from test_config import composition_overrides

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("git") is None, reason="git is needed by DVC")]


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\n")
    for rel in filter(None, files):
        src = PROJECT_ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    """A committed copy of the repository after `.venv/bin/dvc repro` (the README's command) on 12 generated
    photos per class, with the venv NOT on PATH: stages must still run in the venv's Python
    (pipelines/_interpreter.py), not in whatever `python3` PATH finds first."""
    tmp = tmp_path_factory.mktemp("dvc")
    repo = tmp / "repo"
    _copy_repo(repo)
    raw = make_dataset(tmp / "raw", per_class=12)
    tiny = [f"data.source.path={raw}", "data.split.train=6", "data.split.validation=3", "data.split.test=3",
            "data.image_size=48", "backbone.weights=none", "trainer.progress_bar=false"]
    cfg = compose([*tiny, "profile=smoke"])
    (repo / "params.yaml").write_text(yaml.safe_dump(OmegaConf.to_container(cfg, resolve=True), sort_keys=False))
    path = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())
    assert str(BIN) not in path.split(os.pathsep)
    # bytecode written as on a user's machine (this sandbox sets PYTHONDONTWRITEBYTECODE): a stage that
    # imports src/ writes __pycache__/ into folders that other stages hash as deps, so .dvcignore must hide it
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
           "PATH": path, "PYTHONPATH": str(repo / "src"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "DVC_NO_ANALYTICS": "1"}
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "copy"], repo, env)
    first = _run(DVC + ["repro"], repo, env)
    return repo, env, tiny, first


BIN = Path(sys.executable).parent
DVC = [str(BIN / "dvc")]


def _stages_in_status(status: str) -> set[str]:
    """The stages `dvc status` reports as changed: its unindented `<stage>:` lines."""
    return {line[:-1] for line in status.splitlines() if line.endswith(":") and not line[:1].isspace()}


def test_editing_publishing_code_retrains_nothing(repro):
    """Training stages do not depend on how a model is served, predicted with, described or explained: after
    an edit to any of that code `dvc status` lists `publish` (visualize too, for viz/), and no training stage."""
    repo, env, _, _ = repro
    for rel in ("src/catdog_lab/predict.py", "src/catdog_lab/serving.py", "src/catdog_lab/model_card.py",
                "src/catdog_lab/viz/figures.py"):
        path = repo / rel
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        try:
            status = _run(DVC + ["status"], repo, env)
        finally:
            path.write_text(original)
        changed = _stages_in_status(status)
        assert "publish" in changed, (rel, status)
        assert not changed & {"split", *TRAINING_STAGES}, (rel, status)
    assert "up to date" in _run(DVC + ["status"], repo, env)


def test_dvc_push_then_a_fresh_clone_pulls_every_result(repro):
    """The default remote (.dvc/config: `local`, a folder next to the project) carries models, data and the
    report to a fresh clone: after `dvc pull` nothing is missing and nothing needs rerunning."""
    from catdog_lab.report import referenced_files

    repo, env, _, _ = repro
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "results"], repo, env)
    pushed = _run(DVC + ["push"], repo, env)
    remote = repo.parent / "catdog-lab-dvc-remote"
    assert remote.is_dir() and any(p.is_file() for p in remote.rglob("*")), pushed

    clone = repo.parent / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], repo.parent, env)
    assert not (clone / "models").exists() and not (clone / "reports/index.html").exists()
    _run(DVC + ["pull"], clone, env)
    status = _run(DVC + ["status"], clone, env)
    assert "Data and pipelines are up to date" in status, status
    for stage in ("scratch", "augmented", "features", "features_augmented", "finetune"):
        assert (clone / "models" / f"{stage}.pt").read_bytes() == (repo / "models" / f"{stage}.pt").read_bytes()
    images = referenced_files(clone / "reports/index.html")
    figures = [p for p in images if p.parent.name == "figures"]
    assert len(figures) >= 5 and all(p.is_file() and p.stat().st_size > 0 for p in images), images

    from catdog_lab.browser_check import check_page, chromium
    if chromium():                       # the page as a browser sees it, when this machine has one
        result = check_page(clone / "reports/index.html")
        assert result["broken"] == [] and result["images"] == len(images)


def test_dvc_repro_runs_the_pipeline_and_a_second_repro_does_nothing(repro):
    """Then: a second repro does nothing, `dvc status` sees code and params changes that matter and ignores
    those that do not, `dvc exp run -S profile=quick` (after the push test, which wants the plain run)."""
    repo, env, tiny, _ = repro
    dvc = DVC
    for stage in ("scratch", "augmented", "features", "features_augmented", "finetune"):
        assert (repo / "metrics" / f"{stage}.json").exists(), stage
        assert (repo / "models" / f"{stage}.pt").exists(), stage
        assert (repo / "models" / f"{stage}.md").exists(), stage        # the publish stage's model card
    published = json.loads((repo / "models" / "published.json").read_text())
    assert sorted(published["models"]) == sorted(TRAINING_STAGES)
    assert all(entry["registered"]["name"] == f"catdog-{stage}" for stage, entry in published["models"].items())
    assert published["champion"] in (repo / "reports" / "comparison.md").read_text()
    assert (repo / "mlflow.db").exists()
    second = _run(dvc + ["repro"], repo, env)
    assert "Running stage" not in second, second
    status = _run(dvc + ["status"], repo, env)
    assert "up to date" in status, status
    shown = _run(dvc + ["metrics", "show"], repo, env)
    assert "metrics/scratch.json" in shown and "test/acc" in shown

    # presentation-only params rerun nothing; code every network passes through reruns the training stages
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["trainer"]["progress_bar"], params["compute"]["loader_workers"] = True, 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "up to date" in _run(dvc + ["status"], repo, env)
    factory = repo / "src/catdog_lab/models/factory.py"
    original = factory.read_text()
    factory.write_text(original + "\n# edited\n")
    status = _run(dvc + ["status"], repo, env)
    for stage in ("scratch", "augmented", "features", "features_augmented", "finetune", "publish", "visualize"):
        assert f"{stage}:" in status, status
    factory.write_text(original)
    params["trainer"]["progress_bar"], params["compute"]["loader_workers"] = False, 0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # the README's experiment command rewrites params.yaml from conf/; tests and `dvc exp` must cope
    _run(dvc + ["exp", "run", "scratch", "-S", "profile=quick", *[a for kv in tiny for a in ("-S", kv)]], repo, env)
    experiment = yaml.safe_load((repo / "params.yaml").read_text())
    assert experiment["profile"] == "quick"
    assert experiment["scratch"]["epochs"] == compose(["profile=quick"]).scratch.epochs
    composition_overrides(experiment)                       # what tests/test_config.py accepts
    assert _run(dvc + ["exp", "list", "--name-only"], repo, env).split(), "dvc exp list shows no experiment"
    diff = _run(dvc + ["exp", "diff"], repo, env)
    assert "profile" in diff and "quick" in diff and "scratch.epochs" in diff, diff
    assert "quick" in _run(dvc + ["exp", "show", "--md"], repo, env)
