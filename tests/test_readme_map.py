"""The README's map ("Where things are") stays the map: every module, script and benchmark is on it, and
every path it names at the start of a line exists. A new file without a line there fails here."""
from __future__ import annotations

import re

from catdog_lab.config import PROJECT_ROOT

SRC = PROJECT_ROOT / "src" / "catdog_lab"


def _map_block() -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    start = text.index("## Where things are")
    opening = text.index("```\n", start) + 4
    return text[opening:text.index("```", opening)]


def test_every_module_script_and_benchmark_is_on_the_map():
    block = _map_block()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", block))
    modules = [p for p in SRC.rglob("*.py") if p.name != "__init__.py" and "__pycache__" not in p.parts]
    # by file name; viz/ and stages/ are listed by what they hold (primer, ..., split(cfg), train(cfg, stage))
    missing = [str(p.relative_to(SRC)) for p in modules
               if p.name not in block and not (p.parent.name in ("viz", "stages") and p.stem in words)]
    tools = [p for folder in ("scripts", "benchmarks") for p in (PROJECT_ROOT / folder).glob("*.py")]
    missing += [str(p.relative_to(PROJECT_ROOT)) for p in tools if f"{p.parent.name}/{p.name}" not in block]
    assert len(modules) > 30 and tools, "the map test found nothing to check"
    assert not missing, f"not on the README's map: {missing}"


def test_every_path_the_map_starts_a_line_with_exists():
    block = _map_block()
    named = [line.split()[0] for line in block.splitlines() if line and not line[0].isspace()]
    # `src/catdog_lab/` introduces indented names relative to it; the first column is always from the root
    absent = [name for name in named if not (PROJECT_ROOT / name.replace("<stage>", "split")).exists()]
    assert len(named) > 20
    assert not absent, f"the README's map names paths that do not exist: {absent}"
