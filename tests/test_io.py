"""Where shared paths live: the project root, also from inside a queued experiment's temporary copy."""
from catdog_lab.io import project_root, shared_path


def test_project_root_is_dvc_root_else_the_cwd(tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert project_root() == elsewhere.resolve()
    monkeypatch.setenv("DVC_ROOT", str(project))              # DVC sets it for every stage command
    assert project_root() == project.resolve()
    assert shared_path("metrics/seeds") == project.resolve() / "metrics/seeds"
    assert shared_path(elsewhere / "x") == elsewhere / "x"    # absolute paths stay as they are


def test_a_queued_experiments_copy_maps_back_to_the_project(tmp_path, monkeypatch):
    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    (copy / "src").mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(copy))                 # older DVC: the temporary copy's root
    assert project_root() == project.resolve()
    monkeypatch.delenv("DVC_ROOT")
    monkeypatch.chdir(copy / "src")                            # no DVC_ROOT: the cwd inside the copy
    assert project_root() == project.resolve()
