"""A DVC stage's entry: run the catdog_lab stage this file is named after (catdog_lab.registry) with
params.yaml. Every pipelines/<stage>.py is this same file. No logic here."""
import _interpreter  # noqa: F401  (first: re-runs this script with the Python that runs dvc)
from pathlib import Path

from catdog_lab.entry import run_stage

if __name__ == "__main__":
    run_stage(Path(__file__).stem)
