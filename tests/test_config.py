import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from catdog_lab.config import CONF_DIR, PROJECT_ROOT, compose, flatten
from catdog_lab.data.sources import resolve_source
from catdog_lab.errors import ConfigError
from catdog_lab.settings import validate_stage
from catdog_lab.stages.split import validate_data


def composition_overrides(params: dict) -> dict:
    """The keys where `params` differs from conf/ composed with its own profile, after checking that it
    is such a composition: same keys, same kinds of values. `dvc exp run -S profile=quick` writes one."""
    base = flatten(compose([f"profile={params.get('profile')}"]))        # an unknown profile fails here
    got = flatten(params)
    assert got.keys() == base.keys(), (
        f"params.yaml keys differ from conf/: unknown {sorted(got.keys() - base.keys())},"
        f" missing {sorted(base.keys() - got.keys())}: run `python -m catdog_lab.config`")
    diff = {k: v for k, v in got.items() if v != base[k]}
    for key, value in diff.items():
        kinds = {type(value), type(base[key])}
        assert type(None) in kinds or kinds <= {int, float} or len(kinds) == 1, \
            f"params.yaml {key}: {value!r} is not a value conf/ could compose (conf/ has {base[key]!r})"
    return diff


def _committed_params() -> dict | None:
    proc = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    return yaml.safe_load(proc.stdout) if proc.returncode == 0 else None


def test_params_yaml_is_the_composition_of_conf():
    """params.yaml is conf/ composed. The workspace copy may be an experiment's (`dvc exp run -S ...` rewrites
    it: then it must still be a composition of conf/ under some overrides), but then the committed one
    must be the default composition: an edit of conf/ without `python -m catdog_lab.config` still fails."""
    composed = OmegaConf.to_container(compose(), resolve=True)
    workspace = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    composition_overrides(workspace)
    if workspace != composed:
        assert _committed_params() == composed, "params.yaml is stale: run `python -m catdog_lab.config`"


def test_an_experiments_params_yaml_passes_and_a_stale_one_fails():
    quick = OmegaConf.to_container(compose(["profile=quick", "scratch.lr=0.001"]), resolve=True)
    assert composition_overrides(quick) == {"scratch.lr": 0.001}
    stale = OmegaConf.to_container(compose(), resolve=True)
    del stale["trainer"]["deterministic"]
    with pytest.raises(AssertionError, match="missing.*trainer.deterministic"):
        composition_overrides(stale)


def test_no_hydra_or_env_interpolations_in_conf():
    for path in (PROJECT_ROOT / "conf").rglob("*.yaml"):
        text = path.read_text()
        assert "${hydra:" not in text and "${oc.env:" not in text, path


def test_profiles_set_every_training_stage_epochs():
    from catdog_lab.registry import TRAINING_STAGES
    book, quick = compose(), compose(["profile=quick"])
    assert book.scratch.epochs == 30 and book.augmented.epochs == 100 and book.finetune.epochs == 100
    for stage in TRAINING_STAGES:
        assert quick[stage].epochs <= book[stage].epochs


@pytest.mark.parametrize("override, key", [
    ("scratch.epochs=-1", "scratch.epochs"),
    ("scratch.epochs=0", "scratch.epochs"),
    ("augmented.lr=0", "augmented.lr"),
    ("augmented.lr=-0.1", "augmented.lr"),
    ("scratch.batch_size=0", "scratch.batch_size"),
    ("augmented.dropout=1.5", "augmented.dropout"),
    ("backbone.builder=resnet9000", "backbone.builder"),      # backbone.name is a label: the builder is checked
    ("backbone.name=a/b", "backbone.name"),
    ("backbone.weights=/no/such/file.pt", "backbone.weights"),
    ("trainer.deterministic=maybe", "trainer.deterministic"),
])
def test_bad_values_name_the_key(override, key):
    cfg = compose([override])
    stage = key.split(".")[0] if key.split(".")[0] in ("scratch", "augmented") else "features"
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}:"):
        validate_stage(cfg, stage)


def test_missing_data_path_and_small_images_name_the_key():
    missing = compose(["data.source.path=/no/where"])
    with pytest.raises(ConfigError, match=r"^data\.source\.path: /no/where does not exist"):
        validate_data(missing)
    with pytest.raises(ConfigError, match=r"^data\.source\.path: /no/where does not exist$"):
        resolve_source(missing.data.source)                   # the split stage's own check is the same one
    with pytest.raises(ConfigError, match=r"^data\.image_size:"):
        validate_data(compose(["data.image_size=16"]))
    with pytest.raises(ConfigError, match=r"^data\.split\.train:"):
        validate_data(compose(["data.split.train=-5"]))


def test_unknown_group_option_is_one_line_with_the_valid_options():
    # Hydra lists the options on lines after its first; they were cut off with the rest
    profiles = ", ".join(sorted(path.stem for path in (CONF_DIR / "profile").glob("*.yaml")))
    with pytest.raises(ConfigError) as info:
        compose(["profile=turbo"])
    assert str(info.value) == f"profile: no option 'turbo'; choose from {profiles}"
    with pytest.raises(ConfigError, match=r"^backbone: no option 'vgg19'; choose from .*resnet50.*vgg16$"):
        compose(["backbone=vgg19"])


def test_an_override_of_a_key_that_does_not_exist_names_the_nearest_one():
    with pytest.raises(ConfigError) as info:
        compose(["scratch.epoch=3"])
    assert str(info.value) == ("scratch.epoch: no such key in the config; did you mean scratch.epochs? "
                               "(to add a new key: +scratch.epoch=...)")
    with pytest.raises(ConfigError, match=r"^zzz\.qqq: no such key in the config \(to add a new key: "):
        compose(["zzz.qqq=1"])


def test_a_sweep_is_checked_value_by_value_before_its_first_job():
    # a multirun printed Hydra's 15-line message (or started jobs) for a bad option among its values
    from catdog_lab.cli import check_sweep
    check_sweep(["+stage=scratch", "scratch.lr=1e-4,3e-4", "profile=book,book2", "seed=range(1,3)",
                 "augmented.lr=interval(1e-5,1e-3)"])
    with pytest.raises(ConfigError, match=r"^profile: no option 'fast'; choose from book, "):
        check_sweep(["+stage=scratch", "scratch.lr=1e-4,3e-4", "profile=book,fast"])
    with pytest.raises(ConfigError, match=r"^scratch\.lrr: no such key in the config; did you mean scratch\.lr\? "):
        check_sweep(["+stage=scratch", "scratch.lrr=1e-4,3e-4"])
    with pytest.raises(ConfigError) as info:
        check_sweep(["+stage=scratch", "scratch.epochs=[1"])
    assert str(info.value) == ("scratch.epochs=[1: no viable alternative at input '[1' (Hydra's override syntax: "
                               "key=value, key=a,b for a sweep)")


@pytest.mark.integration
def test_pipeline_entry_prints_one_line_and_exits_2(tmp_path):
    params = OmegaConf.to_container(compose(["scratch.epochs=-3"]), resolve=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-c", "from catdog_lab.entry import run_stage; run_stage('scratch')"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: scratch.epochs: must be a positive integer, got -3"
