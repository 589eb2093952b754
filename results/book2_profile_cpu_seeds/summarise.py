"""Print the `book2` tables of docs/reproducing-the-book.md ("Measured") from the seed ledger and this folder.

Run from the project root: python results/book2_profile_cpu_seeds/summarise.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))     # results/ledger_tables.py
from ledger_tables import print_tables  # noqa: E402

print_tables("book2", "results/book2_profile_cpu_seeds",
             ("scratch", "augmented", "features", "features_augmented", "finetune"))
