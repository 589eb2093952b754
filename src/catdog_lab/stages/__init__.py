"""The stage layer: each module takes the composed config (`cfg`), checks the sections it reads once
(settings.py, schema.py) and hands typed values or plain data to the code below it."""
from __future__ import annotations


def plain(cfg) -> dict:
    """The resolved config as plain data: what the seed ledger hashes and model cards quote, as written
    (a typed copy would turn `rotation_degrees: 40` into 40.0 and move every recipe hash)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def tracking_for(cfg):
    """The stage's `Tracking`: `tracking.*` checked, and the whole config as the run's parameters."""
    from catdog_lab.schema import TrackingSettings, check
    from catdog_lab.tracking import Tracking

    return Tracking.from_config(check(cfg, "tracking", TrackingSettings), plain(cfg))
