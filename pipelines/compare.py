"""DVC stage `compare`: read params.yaml, run catdog_lab's compare stage. No logic here."""
from catdog_lab.entry import run_stage

if __name__ == "__main__":
    run_stage("compare")
