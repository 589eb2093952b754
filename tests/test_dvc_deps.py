"""dvc.yaml's deps are complete by test: every catdog_lab file a stage can import is a dependency.

A hand-kept list drifts (models/factory.py and models/components/preprocess.py were missing from
every training stage, so editing them left `dvc repro` "up to date"). Here each stage's import
closure is computed statically from `pipelines/<stage>.py`: every `import` / `from ... import`
anywhere in a file (inside functions too, so lazy imports count), every package `__init__.py` on
the way, and `from pkg import name` counts `pkg/name.py` when that is a module. The closure is a
superset of what one config executes: a training stage depends on the code of every model kind,
because its config may pick any of them.

One addition, stated: `catdog_lab.entry.stage_function` imports the stage's module by name from the
registry (`catdog_lab.registry`, importlib: invisible to a static walk), so the walk starts from that
module too, and from no other stage's. `pipelines/_interpreter.py` is not followed: it is outside
catdog_lab and only chooses the interpreter.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from catdog_lab.config import PROJECT_ROOT
from catdog_lab.registry import REGISTRY, TRAINING_STAGES

SRC = PROJECT_ROOT / "src"
PACKAGE = "catdog_lab"
DVC = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def _module_file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _with_packages(module: str) -> list[str]:
    """`a.b.c` executes a/__init__.py and a/b/__init__.py before a/b/c.py."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imported_modules(node: ast.AST, current: str, is_package: bool) -> list[str]:
    out = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Import):
            out += [alias.name for alias in sub.names]
        elif isinstance(sub, ast.ImportFrom):
            if sub.level:
                anchor = current.split(".")[: len(current.split(".")) - sub.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([sub.module] if sub.module else []))
            else:
                base = sub.module or ""
            out.append(base)
            out += [f"{base}.{alias.name}" for alias in sub.names if _module_file(f"{base}.{alias.name}")]
    return [m for m in out if m == PACKAGE or m.startswith(PACKAGE + ".")]


def import_closure(stage: str) -> set[Path]:
    """Files of catdog_lab that `pipelines/<stage>.py` can execute."""
    entry_tree = ast.parse((PROJECT_ROOT / "pipelines" / f"{stage}.py").read_text())
    todo = [*_imported_modules(entry_tree, "pipelines", False), REGISTRY[stage].module]
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        module = todo.pop()
        for name in _with_packages(module):
            if name in seen:
                continue
            seen.add(name)
            path = _module_file(name)
            assert path is not None, f"{name}: imported but not found under src/"
            files.add(path)
            todo += _imported_modules(ast.parse(path.read_text()), name, path.name == "__init__.py")
    return files


def _dep_paths(stage: str) -> list[Path]:
    return [PROJECT_ROOT / (d if isinstance(d, str) else next(iter(d))) for d in DVC[stage].get("deps", [])]


def _covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


@pytest.mark.parametrize("stage", list(DVC))
def test_every_imported_file_is_a_dependency_of_the_stage(stage):
    deps = _dep_paths(stage)
    closure = import_closure(stage)
    assert any(p.name == "entry.py" for p in closure), "the closure walk found nothing: is the test broken?"
    missing = sorted(str(p.relative_to(PROJECT_ROOT)) for p in closure if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} runs these files but does not depend on them: {missing}"


@pytest.mark.parametrize("stage", list(DVC))
def test_every_source_dependency_exists(stage):
    code = [p for p in _dep_paths(stage) if p.is_relative_to(SRC) or p.is_relative_to(PROJECT_ROOT / "pipelines")]
    gone = [str(p.relative_to(PROJECT_ROOT)) for p in code if not p.exists()]
    assert not gone, f"dvc.yaml stage {stage!r} depends on files that do not exist: {gone}"


def test_the_walk_follows_lazy_imports_and_only_the_stages_own_module():
    scratch = {p.relative_to(SRC).as_posix() for p in import_closure("scratch")}
    compare = {p.relative_to(SRC).as_posix() for p in import_closure("compare")}
    assert "catdog_lab/models/components/heads.py" in scratch    # imported inside settings.validate_stage
    assert "catdog_lab/models/components/preprocess.py" in scratch
    assert "catdog_lab/stages/train.py" not in compare and "catdog_lab/stages/visualize.py" not in compare
    split = {p.relative_to(SRC).as_posix() for p in import_closure("split")}
    assert not any(p.startswith("catdog_lab/models/") for p in split)   # the split validates data.* only


# how a model is served, predicted with, exported, described and explained: the `publish` stage's (and
# visualize's) code. A training stage that depended on it would retrain when, say, catdog-predict's table changed.
PUBLISHING = ("predict.py", "serving.py", "export.py", "model_card.py", "viz")


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_training_stages_neither_import_nor_depend_on_publishing_code(stage):
    publishing = [SRC / PACKAGE / name for name in PUBLISHING]
    assert all(path.exists() for path in publishing), "a publishing module moved: update PUBLISHING"
    imported = sorted(str(p.relative_to(SRC)) for p in import_closure(stage)
                      if any(p == code or code in p.parents for code in publishing))
    assert not imported, f"training stage {stage!r} can import publishing code: {imported}"
    deps = _dep_paths(stage)
    inside = {code: list(code.rglob("*.py")) if code.is_dir() else [] for code in publishing}
    listed = sorted(str(code.relative_to(SRC)) for code in publishing
                    if _covered(code, deps) or any(_covered(f, deps) for f in inside[code]))
    assert not listed, f"dvc.yaml: training stage {stage!r} depends on publishing code: {listed}"


# trainer keys that cannot change a stage's outputs; every other trainer key must be a param of the stage
# (so a new trainer key is a dependency until someone argues here that it is not)
PRESENTATION_ONLY = {"trainer.progress_bar", "trainer.progress_refresh_rate", "trainer.log_every_n_steps",
                     "compute.loader_workers",    # workers only load cached tensors
                     "compute.resident_data"}     # the same batches from device memory (tests/test_gpu_path.py)


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_training_stage_params_are_the_keys_that_change_its_results(stage):
    from catdog_lab.config import load_params

    cfg = load_params(PROJECT_ROOT / "params.yaml")
    params = set(DVC[stage]["params"])
    needed = {"seed", "profile", "data.image_size", stage}
    needed |= {f"{group}.{k}" for group in ("trainer", "compute") for k in cfg[group]} - PRESENTATION_ONLY
    if cfg[stage].augment:
        needed.add("augmentation")
    if cfg[stage].model in ("head", "transfer"):
        needed.add("backbone")
    assert needed <= params, f"dvc.yaml stage {stage!r} misses params {sorted(needed - params)}"
    whole_groups = {"trainer", "compute", "tracking"}
    rerunning = sorted(params & (PRESENTATION_ONLY | whole_groups))
    assert not rerunning, f"dvc.yaml stage {stage!r}: presentation-only keys would rerun it: {rerunning}"
    if cfg[stage].get("init_from"):
        assert f"models/{cfg[stage].init_from}.pt" in DVC[stage]["deps"]
