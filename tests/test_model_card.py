"""models/<stage>.md: generated from the split, the recipe, the seed ledger and the stage's metrics."""
from catdog_lab import seeds
from catdog_lab.data.split import manifest_hash
from catdog_lab.model_card import write_card
from catdog_lab.models.factory import build_from_arch, save_model
from catdog_lab.settings import model_arch
from catdog_lab.stages import plain


def test_card_states_split_hash_recipe_seed_spread_and_limits_without_machine_paths(tiny_split, tmp_path):
    cfg = tiny_split
    model = tmp_path / "models" / "scratch.pt"
    arch = model_arch(cfg, "scratch")
    save_model(model, "scratch", arch, build_from_arch(arch))
    for seed, acc in ((1, 0.70), (2, 0.74)):
        cfg.seed = seed
        seeds.record(plain(cfg), "scratch", {"test/acc": acc})
    metrics = {"test/acc": 0.74, "test/loss": 0.5, "val/acc": 0.71, "test_images": 6, "seed": 2, "select": "last",
               "selected_epoch": 1, "best_epoch": 1, "epochs": 1, "profile": "smoke", "fit_seconds": 1.5,
               "wall_time_s": 2.0, "seconds_per_epoch": 1.5, "device": "cpu"}
    card_file = write_card(plain(cfg), "scratch", model, metrics)
    card = card_file.read_text()
    assert card_file == tmp_path / "models" / "scratch.md"
    assert f"hash `{manifest_hash(cfg.paths.split)}`" in card
    assert f"`{seeds.recipe_hash(plain(cfg), 'scratch')}`" in card and "epochs 1, lr 0.0001" in card
    assert "test accuracy over 2 seeds (1, 2): mean 72.0%, sd 2.8 pts" in card
    assert "Test accuracy 74.0% on 6 images" in card and "validation accuracy 71.0%" in card
    assert "2 of the 6 test photos are misclassified" in card
    assert "not registered (MLflow tracking was off)" in card and "CPU only" in card
    assert str(tmp_path) not in card                      # published text: folder names, never machine paths
