"""MLflow: one SQLite store, one run per stage execution, grouped under a parent run per pipeline.

Runs of one `dvc repro` share a `pipeline_id` tag (git commit + params.yaml hash, or
$CATDOG_PIPELINE_ID) and hang under one parent run named after it, which `compare` fills with the
accuracy table. SQLite "database is locked" errors (concurrent queue workers) are retried.

The stage layer builds a `Tracking` from the config once (`Tracking.from_config`) and hands it down:
nothing here reads the config object.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from catdog_lab.config import flatten, params_hash
from catdog_lab.errors import ConfigError
from catdog_lab.io import file_lock, project_root
from catdog_lab.registry import REGISTRY

if TYPE_CHECKING:
    from catdog_lab.schema import TrackingSettings


def retry(fn: Callable, attempts: int = 8, base_delay: float = 0.2):
    """Retry an MLflow call while SQLite reports a lock held by another writer."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # sqlalchemy OperationalError wrapped in MlflowException
            if "locked" not in str(exc).lower() and "busy" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(base_delay * (2 ** attempt) * (1 + random.random()))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


def standard_tags() -> dict[str, str]:
    """MLflow's own tags: mlflow.user, mlflow.source.name/type, mlflow.source.git.commit (+ repo URL and
    branch when MLflow finds them). Only the fluent mlflow.start_run adds them; MlflowClient.create_run,
    which we need for parent runs and resuming, does not. MLflow looks for git next to sys.argv[0]
    (pipelines/<stage>.py under DVC); the commit of the working directory is the fallback."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    tags = resolve_tags()
    commit = git_commit()
    if commit != "unknown":
        tags.setdefault(MLFLOW_GIT_COMMIT, commit)
    return tags


def tracking_uri(uri: str) -> str:
    """`tracking.uri` with a relative SQLite file resolved against the project root."""
    uri = str(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{project_root() / uri[len('sqlite:///'):]}"
    return uri


def artifact_location(path: str) -> str:
    """`tracking.artifact_location` as a file URI, a relative folder resolved against the project root."""
    path = Path(str(path))
    return (path if path.is_absolute() else project_root() / path).as_uri()


@dataclass(frozen=True)
class Tracking:
    """What the MLflow code needs from the config: `tracking.*` resolved, and the run's parameters."""
    enabled: bool
    uri: str = ""                  # resolved (tracking_uri)
    artifact_location: str = ""    # a file URI (artifact_location)
    experiment: str = ""
    profile: str = ""
    params_hash: str = ""          # of the whole config: with the commit, the pipeline's id
    params: dict[str, Any] = field(default_factory=dict)     # the flattened config, logged on every stage run
    run_note: str = ""             # appended to the run name: a sweep job's overrides (set by the CLI only)
    names: dict[str, Any] = field(default_factory=dict)      # backbone + finetune: what run names are filled with

    @classmethod
    def from_config(cls, settings: "TrackingSettings", params: dict) -> "Tracking":
        """`settings`: `tracking.*`, checked; `params`: the whole resolved config as plain data."""
        if not settings.enabled:
            return cls(enabled=False)
        return cls(enabled=True, uri=tracking_uri(settings.uri),
                   artifact_location=artifact_location(settings.artifact_location),
                   experiment=settings.experiment, profile=str(params.get("profile", "")),
                   params_hash=params_hash(params), params=flatten(params),
                   run_note=settings.run_note,
                   names={key: params[key] for key in ("backbone", "finetune") if key in params})


def pipeline_id(tracking: Tracking) -> str:
    if os.environ.get("CATDOG_PIPELINE_ID"):
        return os.environ["CATDOG_PIPELINE_ID"]
    return hashlib.sha256(f"{git_commit()}:{tracking.params_hash}".encode()).hexdigest()[:12]


@contextlib.contextmanager
def _store_init_lock(uri: str):
    """Serialise the first connection to a SQLite store: MLflow creates/migrates its schema then, and two
    processes doing it at once (parallel queue workers on a fresh mlflow.db) corrupt the migration."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with file_lock(uri[len("sqlite:///"):] + ".lock"):      # without POSIX locks (Windows): retry() only
        yield


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Only warnings from these loggers for a while: a new store's schema set-up logs two INFO lines
    ("Creating initial MLflow database tables...") before the first stage's own output."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def mlflow_client(tracking: Tracking):
    """An MlflowClient on `tracking.uri`, the store's schema created (under a lock) on first use."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking.uri
    mlflow.set_tracking_uri(uri)
    try:
        with _store_init_lock(uri), _quiet("mlflow.store.db.utils", "alembic"):
            client = MlflowClient(tracking_uri=uri)
            retry(lambda: client.search_experiments(max_results=1))     # opens the store (schema) under the lock
    except MlflowException as exc:    # an unknown scheme, a server that is not there: the key, not a traceback
        reason = " ".join(str(exc).split())[:400]
        if "locked" in reason.lower():        # a store busy past every retry is no fault of the key
            raise
        raise ConfigError(f"tracking.uri: MLflow cannot use {uri!r} ({reason}); e.g. sqlite:///mlflow.db, or "
                          f"tracking.enabled=false to run without MLflow") from None
    return client


# tells MLflow 3's UI that this is model training, so it opens on the runs table (not the GenAI overview)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client, tracking: Tracking) -> str:
    def get_or_create():
        exp = client.get_experiment_by_name(tracking.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(tracking.experiment, artifact_location=tracking.artifact_location,
                                            tags=EXPERIMENT_TAGS)
        except Exception as exc:      # created meanwhile by a concurrent worker
            if "already exists" in str(exc).lower() or "unique" in str(exc).lower():
                return client.get_experiment_by_name(tracking.experiment).experiment_id
            raise
    return retry(get_or_create)


def parent_run_id(client, exp_id: str, tracking: Tracking) -> str:
    """The pipeline's parent run: found by tag, created on first use (by whichever stage runs first)."""
    with _store_init_lock(tracking.uri):               # find-or-create atomically across workers
        return _find_or_create_parent(client, exp_id, tracking)


def _find_or_create_parent(client, exp_id: str, tracking: Tracking) -> str:
    pid = pipeline_id(tracking)
    query = f"tags.pipeline_id = '{pid}' and tags.run_kind = 'pipeline'"
    found = retry(lambda: client.search_runs([exp_id], query, max_results=1, order_by=["attributes.start_time ASC"]))
    if found:
        return found[0].info.run_id
    run = retry(lambda: client.create_run(exp_id, run_name=f"pipeline {pid} ({tracking.profile or '?'} profile)",
                                          tags=standard_tags() | {
                                              "pipeline_id": pid, "run_kind": "pipeline", "git_commit": git_commit(),
                                              "profile": tracking.profile, "params_hash": tracking.params_hash}))
    retry(lambda: client.set_terminated(run.info.run_id, "FINISHED"))
    return run.info.run_id


class StageRun:
    """A handle on one stage's MLflow run (or a no-op when tracking is disabled)."""

    def __init__(self, client=None, run_id: str | None = None):
        self.client, self.run_id = client, run_id

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self.enabled:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    retry(lambda k=key, v=value: self.client.log_metric(self.run_id, k, float(v), step=step or 0))

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).exists():
            retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def set_tags(self, tags: dict) -> None:
        if self.enabled:
            for k, v in tags.items():
                retry(lambda k=k, v=v: self.client.set_tag(self.run_id, k, str(v)))


def metric_name(name: str) -> str:
    """A class (folder) name made safe for an MLflow metric key (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^\w\-. /]", "_", name)


@contextlib.contextmanager
def stage_run(tracking: Tracking, stage: str, resume_run_id: str | None = None, extra_tags: dict | None = None
              ) -> Iterator[StageRun]:
    """Open (or reopen, when resuming) the stage's run; mark it FINISHED / FAILED / KILLED on exit."""
    if not tracking.enabled:
        yield StageRun()
        return
    from mlflow.entities import Param

    client = mlflow_client(tracking)
    exp_id = experiment_id(client, tracking)
    parent = parent_run_id(client, exp_id, tracking)
    run_id = None
    if resume_run_id:
        try:
            retry(lambda: client.update_run(resume_run_id, status="RUNNING"))
            run_id = resume_run_id
        except Exception:
            run_id = None
    if run_id is None:
        tags = standard_tags() | {"mlflow.parentRunId": parent, "pipeline_id": pipeline_id(tracking), "stage": stage,
                                  "run_kind": "stage", "git_commit": git_commit(), "params_hash": tracking.params_hash,
                                  "profile": tracking.profile}
        tags |= {k: str(v) for k, v in (extra_tags or {}).items()}
        run_name = (REGISTRY[stage].for_config(tracking.names).run_name if stage in REGISTRY else stage) + \
            (f" [{tracking.run_note}]" if tracking.run_note else "")
        run_id = retry(lambda: client.create_run(exp_id, run_name=run_name, tags=tags)).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in tracking.params.items()]
        for i in range(0, len(params), 100):
            retry(lambda chunk=params[i:i + 100]: client.log_batch(run_id, params=chunk))
    handle = StageRun(client, run_id)
    try:
        yield handle
    except KeyboardInterrupt:
        retry(lambda: client.set_terminated(run_id, "KILLED"))
        raise
    except BaseException:
        retry(lambda: client.set_terminated(run_id, "FAILED"))
        raise
    retry(lambda: client.set_terminated(run_id, "FINISHED"))


@contextlib.contextmanager
def pipeline_run(tracking: Tracking) -> Iterator[StageRun]:
    """The pipeline's parent run, for the summary (the compare stage): the accuracy table and chart."""
    if not tracking.enabled:
        yield StageRun()
        return
    client = mlflow_client(tracking)
    run_id = parent_run_id(client, experiment_id(client, tracking), tracking)
    yield StageRun(client, run_id)
    retry(lambda: client.set_terminated(run_id, "FINISHED"))   # end time = now: the pipeline's duration
