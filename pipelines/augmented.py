"""DVC stage `augmented`: read params.yaml, run catdog_lab's augmented stage. No logic here."""
from catdog_lab.entry import run_stage

if __name__ == "__main__":
    run_stage("augmented")
