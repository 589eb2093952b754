"""train(cfg, stage): every training stage of the chapter, driven by its config section.

Outputs: <models>/<stage>.pt (self-contained model), <metrics>/<stage>.json (DVC metrics),
<plots>/<stage>.csv (per-epoch history), <reports>/curves/<stage>.png, an MLflow run.
Resumable: killed runs continue from <checkpoints>/<stage>/last.ckpt when the params match.

Several devices (`trainer.devices`, `trainer.num_nodes`, `trainer.strategy=ddp`): every rank runs train();
only global rank 0 extracts features, writes the model, metrics, plots, curves and seed ledger, and owns the
MLflow run. Each rank trains on its share of the batch stream (global batch = N x batch_size) and
validates the whole validation set; the test runs on rank 0 alone after fit (see `_test_trainer`).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

from catdog_lab import TRAINING_STAGES
from catdog_lab.config import params_hash, read_path, validate_stage
from catdog_lab.data.augment import BatchAugment
from catdog_lab.data.datamodule import TensorDataModule
from catdog_lab.data.split import manifest_hash
from catdog_lab.errors import DataError
from catdog_lab.history import History
from catdog_lab.io import read_csv, write_json
from catdog_lab.models.classifier import BinaryClassifier
from catdog_lab.models.factory import (arch_from_config, build_from_arch, build_head, load_model, save_model,
                                       transfer_from_head)
from catdog_lab.plots import plot_curves
from catdog_lab.publish import publish_model
from catdog_lab.seeds import record as record_seed
from catdog_lab.tracking import StageRun, stage_run, tracking_uri

# config keys that define a stage's result (a checkpoint is resumed only if these are unchanged)
RESUME_KEYS = ("seed", "data", "backbone", "augmentation")


def _resume_key(cfg, stage: str) -> str:
    return params_hash(cfg, [*RESUME_KEYS, stage])


def _precision(cfg) -> str:
    if str(cfg.trainer.precision) != "auto":
        return str(cfg.trainer.precision)
    return "bf16-mixed" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "32-true"


def _deterministic(cfg) -> bool | str:
    """trainer.deterministic: true makes Lightning call torch.use_deterministic_algorithms(True) (an op with
    no deterministic kernel then raises) and turn off cuDNN autotuning; "warn" only warns for such ops."""
    return cfg.trainer.deterministic


def _accelerator(cfg) -> str:
    return "gpu" if cfg.trainer.accelerator == "cuda" else str(cfg.trainer.accelerator)


def _test_trainer(cfg, trainer: pl.Trainer) -> pl.Trainer:
    """The trainer that tests the kept model: the fitting one on one device, else a one-device trainer on
    rank 0. Testing through DDP would split the test set with Lightning's DistributedSampler, which pads
    the shards with repeated images to equal length and then averages the per-rank means: not the
    full-set accuracy whenever the set does not divide evenly. On one device it is exact, and the test set
    is small next to training."""
    if trainer.world_size == 1:
        return trainer
    return pl.Trainer(accelerator=_accelerator(cfg), devices=1, num_nodes=1, precision=_precision(cfg),
                      deterministic=_deterministic(cfg), logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=trainer.default_root_dir)


def train(cfg, stage: str, fast_dev_run: bool | int = False) -> dict:
    validate_stage(cfg, stage)
    s = cfg[stage]
    paths = cfg.paths
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    t_start = time.perf_counter()

    ckpt_dir = Path(paths.checkpoints) / stage
    history = History(Path(paths.plots) / f"{stage}.csv")
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min",
                                 save_top_k=1, save_last=True,
                                 every_n_epochs=int(cfg.trainer.checkpoint_every_n_epochs))
    callbacks = [checkpoint, history]
    if cfg.trainer.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    # built first: its rank (known from the launcher's environment before fit) decides who writes
    trainer = pl.Trainer(
        max_epochs=int(s.epochs), accelerator=_accelerator(cfg), devices=int(cfg.trainer.devices),
        num_nodes=int(cfg.trainer.num_nodes), strategy=str(cfg.trainer.strategy),
        # the stream batch sampler shards itself per rank (data/sampler.py), and validation runs whole on
        # every rank so that its reduced metrics are the full-set ones (data/datamodule.py)
        use_distributed_sampler=False,
        precision=_precision(cfg), deterministic=_deterministic(cfg), logger=False, callbacks=callbacks,
        enable_progress_bar=bool(cfg.trainer.progress_bar), enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=10, fast_dev_run=fast_dev_run, default_root_dir=ckpt_dir,
    )
    zero = trainer.is_global_zero

    extract_info = {}
    steps = {"steps_per_epoch": s.steps_per_epoch, "validation_steps": s.validation_steps}
    if s.model == "head":
        from catdog_lab.stages.features import extract_features
        extract_info = extract_features(cfg, writer=zero)
        data = TensorDataModule(extract_info["dir"], int(s.batch_size), "features", int(cfg.seed),
                                int(cfg.trainer.num_workers), **steps)
        data.setup()
        in_features = data.datasets["train"].tensors[0][0].numel()
        net = build_head(cfg, stage, in_features)
    else:
        data = TensorDataModule(read_path(cfg, "cache"), int(s.batch_size), "images", int(cfg.seed),
                                int(cfg.trainer.num_workers), **steps)
        net = build_from_arch(arch_from_config(cfg, stage), init=str(s.init))
        if s.get("init_from"):
            source, _ = load_model(read_path(cfg, "models") / f"{s.init_from}.pt", weights=str(s.init_from_weights))
            missing = net.load_state_dict(source.state_dict(), strict=False)
            if missing.missing_keys:
                raise DataError(f"{stage}.init_from: {s.init_from} model does not fit this stage's network "
                                f"(missing {missing.missing_keys[:2]})")
            net.set_trainable(list(s.trainable))    # load_state_dict keeps requires_grad, but be explicit
    augment = BatchAugment.from_config(cfg.augmentation) if s.augment else None
    module = BinaryClassifier(net, float(s.lr), augment, bool(cfg.trainer.channels_last))

    meta_path = ckpt_dir / "meta.json"
    key = _resume_key(cfg, stage)
    resume_from, resume_run = None, None
    if (ckpt_dir / "last.ckpt").exists() and meta_path.exists() and not fast_dev_run:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            resume_from, resume_run = ckpt_dir / "last.ckpt", meta.get("mlflow_run_id")
            print(f"[{stage}] resuming from {resume_from}")
    if resume_from is None and zero:
        shutil.rmtree(ckpt_dir, ignore_errors=True)

    # one MLflow run per stage execution, owned by rank 0; the other ranks log nothing
    tracked = stage_run(cfg, stage, resume_run, {"data_manifest": manifest_hash(read_path(cfg, "split"))}) \
        if zero else contextlib.nullcontext(StageRun())
    with tracked as run:
        if zero:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_json(meta_path, {"key": key, "mlflow_run_id": run.run_id})
        if run.enabled:
            from pytorch_lightning.loggers import MLFlowLogger
            trainer.loggers = [MLFlowLogger(experiment_name=cfg.tracking.experiment,
                                            tracking_uri=tracking_uri(cfg), run_id=run.run_id)]
        t_fit = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
        fit_seconds = time.perf_counter() - t_fit
        if not trainer.is_global_zero:
            # ranks 1..N-1 are done: rank 0 tests on its own and writes every output
            print(f"[{stage}] rank {trainer.global_rank} of {trainer.world_size}: training done")
            return {}
        rows = history.rows if history.rows else (read_csv(history.csv_path) if history.csv_path.exists() else [])
        tests, last_state = evaluate_last_and_best(_test_trainer(cfg, trainer), module, data, checkpoint, rows,
                                                   fast_dev_run)
        selected = str(s.select)
        if selected == "last":
            module.load_state_dict(last_state)
        test = tests[selected]

        final_net = module.net.float().to(memory_format=torch.contiguous_format).cpu()
        arch = arch_from_config(cfg, stage)
        if s.model == "head":
            final_net, arch = transfer_from_head(cfg, stage, final_net), arch | {"kind": "transfer", "trainable": []}
        # a later stage that starts from our last epoch needs it when we keep another one
        keep_last = selected != "last" and tests["best_epoch"] != tests["last_epoch"] and any(
            cfg[t].get("init_from") == stage and cfg[t].get("init_from_weights") == "last" for t in TRAINING_STAGES)
        save_model(Path(paths.models) / f"{stage}.pt", stage, arch, final_net,
                   last_state=_net_state(last_state) if keep_last else None)

        epochs_run = len(rows)
        chosen_epoch = tests["last_epoch"] if selected == "last" else tests["best_epoch"]
        chosen_row = next((r for r in rows if int(r["epoch"]) == chosen_epoch), rows[-1] if rows else {})
        metrics = {
            "test/acc": round(float(test["test/acc"]), 6), "test/loss": round(float(test["test/loss"]), 6),
            "test/acc_last": round(float(tests["last"]["test/acc"]), 6),
            "test/acc_best": round(float(tests["best"]["test/acc"]), 6),
            # the kept epoch's validation figures: what a sweep may tune on (cli.py), never test/*
            "val/acc": _value(chosen_row, "val/acc"), "val/loss": _value(chosen_row, "val/loss"),
            "select": selected, "selected_epoch": chosen_epoch, "best_epoch": tests["best_epoch"],
            "epochs": epochs_run, "seed": int(cfg.seed), "test_images": len(data.datasets["test"]),
            "profile": str(cfg.get("profile", "")),
            "seconds_per_epoch": round(sum(float(r["seconds"]) for r in rows) / epochs_run, 3) if epochs_run else None,
            "fit_seconds": round(fit_seconds, 2), "wall_time_s": round(time.perf_counter() - t_start, 2),
            "device": _device_name(), "devices": trainer.world_size,
        }
        if extract_info.get("images_per_second"):
            metrics["extract_images_per_second"] = round(extract_info["images_per_second"], 2)
        write_json(Path(paths.metrics) / f"{stage}.json", metrics)
        if not fast_dev_run:
            record_seed(cfg, stage, metrics)
        publish_model(run, cfg, stage, Path(paths.models) / f"{stage}.pt", metrics)   # models/<stage>.md + registry
        curves = Path(paths.reports) / "curves" / f"{stage}.png"
        if rows:
            plot_curves(rows, curves, stage)
        # val/acc and val/loss already have one point per epoch (Lightning's logger): log only the summaries
        run.log_metrics({k: v for k, v in metrics.items() if k not in ("val/acc", "val/loss")})
        run.log_artifact(curves, "curves")
        run.log_artifact(Path(paths.plots) / f"{stage}.csv", "history")
    shutil.rmtree(ckpt_dir, ignore_errors=True)         # finished: nothing left to resume
    print(f"[{stage}] test accuracy {metrics['test/acc']:.4f} after {epochs_run} epochs "
          f"({metrics['seconds_per_epoch']} s/epoch, {metrics['wall_time_s']:.0f}s in all)")
    return metrics


def evaluate_last_and_best(trainer, module, data, checkpoint, rows, fast_dev_run) -> tuple[dict, dict]:
    """Test the last epoch and the epoch of lowest validation loss (the same run when they coincide).

    Returns ({"last": test metrics, "best": ..., "last_epoch", "best_epoch"}, the last epoch's state dict);
    the module is left holding the best epoch's weights.
    """
    last_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    last_epoch, best_epoch = (int(rows[-1]["epoch"]) if rows else None), _best_epoch(rows)
    last = trainer.test(module, datamodule=data, verbose=False)[0]
    best = last
    best_path = checkpoint.best_model_path if checkpoint.best_model_path and not fast_dev_run else None
    if best_path and best_epoch != last_epoch:
        module.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"])
        best = trainer.test(module, datamodule=data, verbose=False)[0]
    else:
        best_epoch = last_epoch
    return {"last": last, "best": best, "last_epoch": last_epoch, "best_epoch": best_epoch}, last_state


def _net_state(module_state: dict) -> dict:
    """The LightningModule's state dict -> its `net`'s (prefix `net.` dropped)."""
    return {k[len("net."):]: v for k, v in module_state.items() if k.startswith("net.")}


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _value(row: dict, key):
    value = row.get(key)
    return round(float(value), 6) if value not in (None, "") else None


def _best_epoch(rows):
    scored = [(float(r["val/loss"]), int(r["epoch"])) for r in rows if r.get("val/loss") not in (None, "")]
    return min(scored)[1] if scored else None
