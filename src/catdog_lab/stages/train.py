"""train(cfg, stage): every training stage of the chapter, driven by its config section.

Outputs: <models>/<stage>.pt (self-contained model), <metrics>/<stage>.json (DVC metrics),
<plots>/<stage>.csv (per-epoch history), <reports>/curves/<stage>.png, an MLflow run.
Resumable: killed runs continue from <checkpoints>/<stage>/last.ckpt when the params match.

This module is the stage layer: it reads the config (checked against schema.py once, `settings.py`) and hands
typed values to the data, model and tracking code. `train` reads as its steps: build the trainer, the data
and the net, find a checkpoint to resume, fit, test the last and the best epoch, save the kept model,
write the metrics and figures.

Several devices (`trainer.devices`, `trainer.num_nodes`, `trainer.strategy=ddp`): every rank runs train();
only global rank 0 extracts features, writes the model, metrics, plots, curves and seed ledger, and owns the
MLflow run. Each rank trains on its share of the batch stream (global batch = N x batch_size) and
validates the whole validation set; the test runs on rank 0 alone after fit (see `test_trainer`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

from catdog_lab import BOOK_CLASSES
from catdog_lab.config import params_hash, read_path
from catdog_lab.data.augment import BatchAugment
from catdog_lab.data.datamodule import TensorDataModule, split_classes
from catdog_lab.data.sources import sha256_file
from catdog_lab.data.split import check_split_settings, manifest_hash
from catdog_lab.errors import ConfigError, DataError
from catdog_lab.history import History
from catdog_lab.io import read_csv, write_csv, write_json
from catdog_lab.models.classifier import Classifier
from catdog_lab.models.components.backbones import build_backbone, weights_dtype
from catdog_lab.models.factory import build_from_arch, build_head, load_model, save_model, transfer_from_head
from catdog_lab.models.features import Features, device_for, extract_features, frozen_outputs
from catdog_lab.models.outputs import class_metrics, n_outputs
from catdog_lab.plots import confusion_rows, plot_confusion, plot_curves
from catdog_lab.progress import bar_shows
from catdog_lab.registry import TRAINING_STAGES
from catdog_lab.schema import Split, check
from catdog_lab.seeds import precision as recipe_precision
from catdog_lab.seeds import recipe_hash
from catdog_lab.seeds import record as record_seed
from catdog_lab.settings import (
    StageSettings,
    TrainerSettings,
    backbone_spec,
    model_arch,
    validate_stage,
)
from catdog_lab.stages import plain, tracking_for
from catdog_lab.tracking import StageRun, metric_name, stage_run

# Warnings every training stage would print for an expected situation (a fresh `dvc repro` prints none):
# - the checkpoint folder holds meta.json (and last.ckpt when a killed run resumes) before `fit`, by design;
# - per-step logging coarser than a short epoch: the history is kept per epoch (History), not per step;
# - Lightning's own use of a torch API that torch has deprecated (nothing this project calls);
# - a transfer net's frozen layers in eval mode when training starts: TransferNet.train keeps them so on
#   purpose (a frozen BatchNorm must not update its statistics), and Lightning keeps the modes it finds.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
warnings.filterwarnings("ignore",
                        message=r"The number of training batches \(\d+\) is smaller than the logging interval")
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class _NoAdverts(logging.Filter):
    """Lightning's "💡 Tip: ... try installing litlogger" line, printed by every stage: an advert, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoAdverts())

# config keys that define a stage's result (a checkpoint is resumed only if these are unchanged)
RESUME_KEYS = ("seed", "data", "backbone", "augmentation")


def train(cfg, stage: str, fast_dev_run: bool | int = False) -> dict:
    settings, trainer_args = validate_stage(cfg, stage)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    started = time.perf_counter()
    ckpt_dir = Path(cfg.paths.checkpoints) / stage
    # built first: its rank (known from the launcher's environment before fit) decides who writes
    trainer, checkpoint, history = make_trainer(trainer_args, settings.epochs, ckpt_dir,
                                                Path(cfg.paths.plots) / f"{stage}.csv", fast_dev_run)
    writer = trainer.is_global_zero      # global rank 0: writes every output and owns the MLflow run
    # the run records data.split in its ledger entry and model card: it must be the split its photos came from
    check_split_settings(read_path(cfg, "split"), check(cfg, "data.split", Split))
    classes = split_classes(read_path(cfg, "cache"), image_size=int(cfg.data.image_size))
    data, net, features = build_data_and_net(cfg, settings, trainer_args, writer=writer, classes=classes,
                                             frozen_store=_frozen_store(cfg, stage) if writer else None)
    augment = BatchAugment.from_config(settings.augmentation) if settings.augment else None
    module = Classifier(net, settings.lr, augment, trainer_args.channels_last, n_classes=len(classes),
                        eval_from_frozen=bool(data.eval_inputs), loss_clip=settings.loss_clip)
    resume_key = params_hash(cfg, [*RESUME_KEYS, stage])
    resume_from, resume_run = resume_point(ckpt_dir, resume_key, fast_dev_run, writer)

    # one MLflow run per stage execution, owned by rank 0; the other ranks log nothing
    tracking = tracking_for(cfg)
    tracked = stage_run(tracking, stage, resume_run, {"data_manifest": manifest_hash(read_path(cfg, "split"))}) \
        if writer else contextlib.nullcontext(StageRun())
    with tracked as mlflow_run:
        if writer:
            write_json(ckpt_dir / "meta.json", {"key": resume_key, "mlflow_run_id": mlflow_run.run_id})
        if mlflow_run.enabled:
            from pytorch_lightning.loggers import MLFlowLogger
            trainer.loggers = [MLFlowLogger(experiment_name=tracking.experiment, tracking_uri=tracking.uri,
                                            run_id=mlflow_run.run_id)]
        fit_started = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
        fit_seconds = time.perf_counter() - fit_started
        if not writer:
            # ranks 1..N-1 are done: rank 0 tests on its own and writes every output
            print(f"[{stage}] rank {trainer.global_rank} of {trainer.world_size}: training done")
            return {}
        rows = epoch_rows(history)
        test_results = test_last_and_best(test_trainer(trainer_args, trainer), module, data, checkpoint, rows,
                                          settings.select, fast_dev_run)
        model_path = save_kept_model(cfg, settings, module, test_results, classes)
        metrics = stage_metrics(cfg, settings, test_results, rows, len(data.datasets["test"]), fit_seconds,
                                started, trainer.world_size, features, classes)
        write_outputs(cfg, stage, mlflow_run, model_path, metrics, rows, fast_dev_run)
    shutil.rmtree(ckpt_dir, ignore_errors=True)         # finished: nothing left to resume
    shutil.rmtree(_frozen_store(cfg, stage), ignore_errors=True)
    # resumed: "in all" is the epochs' seconds across the runs, not this process's time alone
    timing = (f"{metrics['wall_time_s']:.0f}s in all" if not resume_from or metrics["epoch_seconds"] is None else
              f"{metrics['epoch_seconds']:.0f}s of epochs in all, {metrics['wall_time_s']:.0f}s in this resumed run")
    print(f"[{stage}] test accuracy {metrics['test/acc']:.4f} after {metrics['epochs']} "
          f"epoch{'s' * (metrics['epochs'] != 1)} "
          f"({metrics['seconds_per_epoch']} s/epoch, {timing})")
    return metrics


# ----------------------------------------------------------------------------------------------- the steps
class LastEveryEpoch(ModelCheckpoint):
    """`best.ckpt` (top-1 by the monitor) and `last.ckpt`, what a killed run resumes from, written every
    `every_n_epochs` epochs. Lightning 2.6's save_last=True writes last.ckpt only when a top-k checkpoint is
    written, here when val/loss improves: a run whose validation loss had stopped falling resumed epochs
    behind its last one. (Private helpers of ModelCheckpoint; tests/test_reliability.py notices a change.)"""

    def _generate_state_key(self, **kwargs) -> str:
        # ModelCheckpoint's key, so that a last.ckpt written before this class restores the best score too
        return f"ModelCheckpoint{kwargs!r}"

    # ModelCheckpoint saves in one of these two hooks (on_train_epoch_end when validation runs once an epoch)
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_due(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_due(trainer)

    def _save_last_if_due(self, trainer: pl.Trainer) -> None:
        # skipped: fast_dev_run, sanity check, not fitting, or this step saved already (last.ckpt with it)
        if not self._should_skip_saving_checkpoint(trainer) and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def make_trainer(trainer_args: TrainerSettings, epochs: int, ckpt_dir: Path, history_csv: Path,
                 fast_dev_run: bool | int) -> tuple[pl.Trainer, ModelCheckpoint, History]:
    """The fitting Trainer, with its checkpoint (best by val loss, and last) and per-epoch history."""
    checkpoint = LastEveryEpoch(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min",
                                save_top_k=1, save_last=True, every_n_epochs=trainer_args.checkpoint_every_n_epochs)
    # a bar only on a terminal: into a log file it is carriage returns held in stdout's buffer for many
    # epochs; there (and with the bar turned off) each epoch prints one line instead (history.epoch_line)
    bar = trainer_args.progress_bar and bar_shows(sys.stdout)     # Lightning's bar writes to stdout
    history = History(history_csv, announce=not bar)
    callbacks = [checkpoint, history]
    if bar:
        callbacks.append(TQDMProgressBar(refresh_rate=trainer_args.progress_refresh_rate))
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    try:
        trainer = pl.Trainer(
            max_epochs=epochs, accelerator=trainer_args.accelerator, devices=trainer_args.devices,
            num_nodes=trainer_args.num_nodes, strategy=trainer_args.strategy,
            # the stream batch sampler shards itself per rank (data/sampler.py), and validation runs whole on
            # every rank so that its reduced metrics are the full-set ones (data/datamodule.py)
            use_distributed_sampler=False,
            precision=trainer_args.resolved_precision(torch.cuda.is_available()),
            deterministic=trainer_args.deterministic,
            logger=False, callbacks=callbacks, enable_progress_bar=bar, enable_model_summary=False,
            num_sanity_val_steps=trainer_args.num_sanity_val_steps, log_every_n_steps=trainer_args.log_every_n_steps,
            fast_dev_run=fast_dev_run, default_root_dir=ckpt_dir,
        )
    except MisconfigurationException as exc:    # a GPU asked for on a machine without one, say
        said = " ".join(str(exc).split())[:300]
        raise ConfigError(f"trainer: {said} (trainer.accelerator={trainer_args.accelerator}, "
                          f"devices={trainer_args.devices}, strategy={trainer_args.strategy}; "
                          f"trainer.accelerator=auto uses what this machine has)") from None
    return trainer, checkpoint, history


def build_data_and_net(cfg, settings: StageSettings, trainer_args: TrainerSettings, writer: bool,
                       classes=BOOK_CLASSES,
                       frozen_store: Path | None = None) -> tuple[TensorDataModule, torch.nn.Module, Features | None]:
    """The stage's data and its network before training: a dense head on cached conv-base features
    (`model: head`, the features computed first if needed), or a net over the image cache, optionally
    started from an earlier stage's model (`init_from`). A transfer net with frozen layers validates and
    tests on those layers' outputs, computed once here (kept in `frozen_store` for a resume)."""
    loader = dict(batch_size=settings.batch_size, seed=int(cfg.seed), num_workers=trainer_args.loader_workers,
                  steps_per_epoch=settings.steps_per_epoch, validation_steps=settings.validation_steps,
                  shuffle_buffer=settings.shuffle_buffer,
                  device=device_for(trainer_args.accelerator) if trainer_args.resident_data else None)
    if settings.model == "head":
        features = cached_features(cfg, trainer_args, writer)
        data = TensorDataModule(features.folder, inputs_key="features", **loader)
        data.setup()
        net = build_head(data.datasets["train"].tensors[0][0].numel(), settings.hidden, settings.dropout,
                         settings.activation, init=settings.init, outputs=n_outputs(len(classes)))
        return data, net, features
    upstream = read_path(cfg, "models") / f"{settings.init_from}.pt" if settings.init_from else None
    if upstream is not None and not upstream.is_file():    # said before building the net: VGG16 may download
        raise DataError(f"{settings.name}.init_from: {upstream} not found: train {settings.init_from} first "
                        f"(`dvc repro {settings.init_from}`, or `upstream=<its job folder>` on the CLI)")
    net = build_from_arch(model_arch(cfg, settings.name), init=settings.init, outputs=n_outputs(len(classes)))
    if upstream is not None:
        source, _ = load_model(upstream, weights=settings.init_from_weights)
        missing = net.load_state_dict(source.state_dict(), strict=False)
        if missing.missing_keys:
            raise DataError(f"{settings.name}.init_from: {settings.init_from} model does not fit this stage's "
                            f"network (missing {missing.missing_keys[:2]})")
        net.set_trainable(list(settings.trainable))    # load_state_dict keeps requires_grad, but be explicit
    eval_inputs = None
    if getattr(net, "frozen_prefix", 0) > 0:
        eval_inputs = frozen_outputs(
            net, read_path(cfg, "cache"), ("validation", "test"), batch_size=int(cfg.backbone.feature_batch_size),
            device=device_for(trainer_args.accelerator), channels_last=trainer_args.channels_last,
            bf16=trainer_args.resolved_precision(torch.cuda.is_available()) == "bf16-mixed", store=frozen_store)
    data = TensorDataModule(read_path(cfg, "cache"), inputs_key="images", eval_inputs=eval_inputs, **loader)
    return data, net, None


def cached_features(cfg, trainer_args: TrainerSettings, writer: bool) -> Features:
    """The frozen conv base's outputs for every split (models/features.py), computed once per weights, data
    and image size; a Hydra CLI job reuses its upstream's (`read_paths.features`)."""
    features_key = {"backbone": params_hash(cfg, ["backbone"]), "manifest": manifest_hash(read_path(cfg, "split")),
                    "image_size": int(cfg.data.image_size)}
    return extract_features(Path(cfg.paths.features), read_path(cfg, "cache"), features_key,
                            lambda: build_backbone(backbone_spec(cfg)),
                            batch_size=int(cfg.backbone.feature_batch_size),
                            device=device_for(trainer_args.accelerator), channels_last=trainer_args.channels_last,
                            reuse_dirs=(read_path(cfg, "features"),), writer=writer)


def resume_point(ckpt_dir: Path, resume_key: str, fast_dev_run: bool | int, writer: bool
                 ) -> tuple[Path | None, str | None]:
    """(checkpoint to resume, its MLflow run id) when an interrupted run with the same result-defining
    params left one; otherwise the stale checkpoints are removed (by the writing rank)."""
    meta_path = ckpt_dir / "meta.json"
    if (ckpt_dir / "last.ckpt").exists() and meta_path.exists() and not fast_dev_run:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == resume_key and _readable(ckpt_dir / "last.ckpt"):
            print(f"[{ckpt_dir.name}] resuming from {ckpt_dir / 'last.ckpt'}")
            return ckpt_dir / "last.ckpt", meta.get("mlflow_run_id")
    if writer:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return None, None


def _readable(checkpoint: Path) -> bool:
    """Whether a checkpoint loads (mmap: a cheap read, the tensors stay on disk). Lightning writes it atomically,
    so only a damaged disk or a hand makes it unreadable; then the stage starts over, and says so."""
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        return True
    except Exception as exc:
        print(f"[{checkpoint.parent.name}] {checkpoint} is unreadable ({type(exc).__name__}): starting this stage "
              f"over", file=sys.stderr)
        return False


def test_trainer(trainer_args: TrainerSettings, trainer: pl.Trainer) -> pl.Trainer:
    """The trainer that tests the kept model: the fitting one on one device, else a one-device trainer on
    rank 0. Testing through DDP would split the test set with Lightning's DistributedSampler, which pads
    the shards with repeated images to equal length and then averages the per-rank means: not the
    full-set accuracy whenever the set does not divide evenly. On one device it is exact, and the test set
    is small next to training."""
    if trainer.world_size == 1:
        return trainer
    return pl.Trainer(accelerator=trainer_args.accelerator, devices=1, num_nodes=1,
                      precision=trainer_args.resolved_precision(torch.cuda.is_available()),
                      deterministic=trainer_args.deterministic,
                      logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=trainer.default_root_dir)


def epoch_rows(history: History) -> list[dict]:
    """The per-epoch rows: in memory, or (a resumed run that had nothing left to fit) from the CSV."""
    if history.rows:
        return history.rows
    return read_csv(history.csv_path) if history.csv_path.exists() else []


def test_last_and_best(trainer: pl.Trainer, module: Classifier, data: TensorDataModule,
                       checkpoint: ModelCheckpoint, rows: list[dict], select: str, fast_dev_run) -> dict:
    """Test the last epoch and the epoch of lowest validation loss (one test when they coincide), and leave
    the module holding the `select`ed one's weights.

    Returns {"last": test metrics, "best": ..., "last_epoch", "best_epoch", "kept_epoch", "kept": test
    metrics of the kept epoch (with its "confusion" matrix), "last_state": the last epoch's state dict}.
    """
    last_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    last_epoch, best_epoch = (int(rows[-1]["epoch"]) if rows else None), _best_epoch(rows)
    last = best = trainer.test(module, datamodule=data, verbose=False)[0] | {"confusion": module.confusion}
    best_path = checkpoint.best_model_path if checkpoint.best_model_path and not fast_dev_run else None
    if best_path and best_epoch != last_epoch:
        # Lightning restores the best checkpoint's weights into `module` before testing
        best = trainer.test(module, datamodule=data, ckpt_path=best_path, verbose=False,
                            weights_only=True)[0] | {"confusion": module.confusion}
    else:
        best_epoch = last_epoch
    if select == "last":
        module.load_state_dict(last_state)
    return {"last": last, "best": best, "last_epoch": last_epoch, "best_epoch": best_epoch,
            "kept_epoch": last_epoch if select == "last" else best_epoch, "kept": last if select == "last" else best,
            "last_state": last_state}


def save_kept_model(cfg, settings: StageSettings, module: Classifier, test_results: dict,
                    classes=BOOK_CLASSES) -> Path:
    """models/<stage>.pt: the kept epoch's net as an image -> logit model (a head on cached features is
    wrapped with its conv base), plus the last epoch's weights when a later stage starts from them."""
    net = module.net.float().to(memory_format=torch.contiguous_format).cpu()
    arch = model_arch(cfg, settings.name)
    if settings.model == "head":
        net = transfer_from_head(net, build_backbone(backbone_spec(cfg)),
                                 int(cfg.data.image_size), settings.hidden, settings.dropout, settings.activation,
                                 n_outputs(len(classes)))
        arch |= {"kind": "transfer", "trainable": []}
    keep_last = (test_results["kept_epoch"] != test_results["last_epoch"]
                 and _continued_from_last(cfg, settings.name))
    path = Path(cfg.paths.models) / f"{settings.name}.pt"
    save_model(path, settings.name, arch, net,
               last_state=_net_state(test_results["last_state"]) if keep_last else None,
               classes=classes, class_counts=_split_counts(cfg))
    return path


def stage_metrics(cfg, settings: StageSettings, test_results: dict, rows: list[dict], test_images: int,
                  fit_seconds: float, started: float, devices: int, features: Features | None,
                  classes=BOOK_CLASSES) -> dict:
    """metrics/<stage>.json: both test accuracies, the kept epoch's validation figures, the kept epoch's
    test figures per class (precision, recall, F1, macro-F1, confusion matrix), and the timings."""
    config = plain(cfg)
    kept_epoch = test_results["kept_epoch"]
    kept_row = next((r for r in rows if int(r["epoch"]) == kept_epoch), rows[-1] if rows else {})
    epochs_run = len(rows)
    metrics = {
        "test/acc": round(float(test_results["kept"]["test/acc"]), 6),
        "test/loss": round(float(test_results["kept"]["test/loss"]), 6),
        "test/acc_last": round(float(test_results["last"]["test/acc"]), 6),
        "test/acc_best": round(float(test_results["best"]["test/acc"]), 6),
        # the kept epoch's validation figures: what a sweep may tune on (cli.py), never test/*
        "val/acc": _value(kept_row, "val/acc"), "val/loss": _value(kept_row, "val/loss"),
        "select": settings.select, "selected_epoch": kept_epoch, "best_epoch": test_results["best_epoch"],
        "epochs": epochs_run, "seed": int(cfg.seed), "test_images": test_images,
        "profile": str(cfg.get("profile", "")),
        "seconds_per_epoch": round(sum(float(r["seconds"]) for r in rows) / epochs_run, 3) if epochs_run else None,
        # every epoch's seconds, across resumes (wall_time_s counts only this process)
        "epoch_seconds": round(sum(float(r["seconds"]) for r in rows), 2) if epochs_run else None,
        "recipe_hash": recipe_hash(config, settings.name),   # its seed-ledger folder: compare mixes no recipes
        "fit_seconds": round(fit_seconds, 2), "wall_time_s": round(time.perf_counter() - started, 2),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "devices": devices,
    }
    # how the numbers were computed: bf16-mixed on a GPU, 32-true on the CPU; and an fp16 weights copy
    metrics["precision"] = recipe_precision(config, settings.name)     # the recipe's precision fact (seeds.py)
    if settings.model in ("head", "transfer"):
        metrics["weights_dtype"] = weights_dtype(str(cfg.backbone.weights))
    if features is not None and features.images_per_second:
        metrics["extract_images_per_second"] = round(features.images_per_second, 2)
    per_class = class_metrics(test_results["kept"]["confusion"], classes)
    metrics |= {"classes": list(classes), "test/macro_f1": per_class["macro_f1"],
                "test/per_class": per_class["per_class"], "test/confusion": per_class["confusion"]}
    return metrics


def write_outputs(cfg, stage: str, mlflow_run: StageRun, model_path: Path, metrics: dict, rows: list[dict],
                  fast_dev_run) -> None:
    """The metrics file, the seed ledger, the curves, the MLflow run. Publishing the model (card, registry,
    champion) is the `publish` stage's: changing how a model is served or described retrains nothing."""
    write_json(Path(cfg.paths.metrics) / f"{stage}.json", metrics)
    if not fast_dev_run:
        record_seed(plain(cfg), stage, metrics)
    curves = Path(cfg.paths.reports) / "curves" / f"{stage}.png"
    if rows:
        plot_curves(rows, curves, stage)
    confusion_png, confusion_csv = confusion_paths(cfg, stage)
    plot_confusion(metrics["test/confusion"], metrics["classes"], confusion_png, stage)
    write_csv(confusion_csv, confusion_rows(metrics["test/confusion"], metrics["classes"]), ["actual", "predicted"])
    # val/acc and val/loss already have one point per epoch (Lightning's logger): log only the summaries
    mlflow_run.log_metrics({k: v for k, v in metrics.items() if k not in ("val/acc", "val/loss")})
    mlflow_run.log_metrics({f"test/{kind}/{metric_name(label)}": figures[kind]
                            for label, figures in metrics["test/per_class"].items()
                            for kind in ("precision", "recall")})
    # `publish` logs the model to the run that made this very file: it finds the run by this tag
    if mlflow_run.enabled:
        mlflow_run.set_tags({"model_sha256": sha256_file(model_path)})
    mlflow_run.log_artifact(curves, "curves")
    mlflow_run.log_artifact(confusion_png, "confusion")
    mlflow_run.log_artifact(Path(cfg.paths.plots) / f"{stage}.csv", "history")


# ----------------------------------------------------------------------------------------------- helpers
def confusion_paths(cfg, stage: str) -> tuple[Path, Path]:
    """The stage's confusion matrix: a figure (reports/confusion/<stage>.png) and DVC's confusion-plot rows
    (plots/<stage>_confusion.csv: actual, predicted)."""
    return (Path(cfg.paths.reports) / "confusion" / f"{stage}.png",
            Path(cfg.paths.plots) / f"{stage}_confusion.csv")


def _split_counts(cfg) -> dict:
    """{split: {class: images}} from the split report (empty when an older split wrote none)."""
    path = read_path(cfg, "split") / "report.json"
    return json.loads(path.read_text()).get("counts", {}) if path.exists() else {}


def _continued_from_last(cfg, stage: str) -> bool:
    """Does a later stage start from this stage's last epoch (`init_from: <stage>`, `init_from_weights: last`)?"""
    return any(cfg[t].get("init_from") == stage and cfg[t].get("init_from_weights") == "last" for t in TRAINING_STAGES)


def _frozen_store(cfg, stage: str) -> Path:
    """Where a transfer stage keeps its frozen layers' outputs until it finishes: beside its checkpoints,
    not among them (Lightning warns about a checkpoint folder that is not empty)."""
    return Path(cfg.paths.checkpoints) / f"{stage}.frozen"


def _net_state(module_state: dict) -> dict:
    """The LightningModule's state dict -> its `net`'s (prefix `net.` dropped)."""
    return {k[len("net."):]: v for k, v in module_state.items() if k.startswith("net.")}


def _value(row: dict, key):
    value = row.get(key)
    return round(float(value), 6) if value not in (None, "") else None


def _best_epoch(rows):
    scored = [(float(r["val/loss"]), int(r["epoch"])) for r in rows if r.get("val/loss") not in (None, "")]
    return min(scored)[1] if scored else None
