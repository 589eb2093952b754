"""DVC stage `features_augmented`: read params.yaml, run catdog_lab's features_augmented stage. No logic here."""
import _interpreter  # noqa: F401  (first: re-runs this script with the Python that runs dvc)
from catdog_lab.entry import run_stage

if __name__ == "__main__":
    run_stage("features_augmented")
