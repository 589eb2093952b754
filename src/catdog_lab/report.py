"""The static HTML report (reports/index.html): opens from disk, no server, relative links only."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

from catdog_lab.io import write_text
from catdog_lab.registry import TRAINING_STAGES

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}figure{margin:1.5em 0}img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:14px}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"""


def _md_table_to_html(table: str) -> str:
    if not table.lstrip().startswith("|"):        # a sentence where there is no table (compare.settings_table)
        return f"<p>{html.escape(table.strip())}</p>"
    lines = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    head, body = lines[0], lines[2:]
    out = ["<table><thead><tr>", *[f"<th>{html.escape(cell.strip())}</th>" for cell in head], "</tr></thead><tbody>"]
    for row in body:
        out += ["<tr>", *[f"<td>{html.escape(cell.strip())}</td>" for cell in row], "</tr>"]
    return "".join(out + ["</tbody></table>"])


def _figure(src: str, title: str, caption: str = "") -> str:
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(title)}">'
            f"<figcaption><b>{html.escape(title)}</b>{(' — ' + html.escape(caption)) if caption else ''}"
            f"</figcaption></figure>")


def figure_index(reports: Path) -> list[dict]:
    """Figures listed by the visualize stage (reports/figures/index.json), those that exist."""
    index = reports / "figures" / "index.json"
    if not index.exists():
        return []
    entries = json.loads(index.read_text())
    return [entry for entry in entries if (reports / "figures" / entry["file"]).exists()]


def build_html(reports: Path, source: Path, profile: str, rows: list[dict], table: str, settings: str,
               split_dir: Path | None = None, metrics_dir: Path | None = None, ladder: list[str] = (),
               intro: str = "") -> Path:
    """reports/index.html, written into `reports`. Curves and figures belong to earlier stages: under DVC
    they sit next to the page (`source` = `reports`); in a CLI job (cli.py) they stay in the workspace or
    upstream run (`source`, read_path), and the page links there relatively."""
    reports, source = Path(reports), Path(source)

    def link(rel: str) -> str:
        return Path(os.path.relpath(source / rel, reports)).as_posix()

    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>catdog-lab report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>catdog-lab: Deep Learning with Python's cats vs dogs, rebuilt</h1>",
             f"<p>Profile <b>{html.escape(profile)}</b>. {html.escape(intro)}</p>",
             "<h2>Accuracy ladder</h2>", _md_table_to_html(table)]
    if (reports / "accuracy.png").exists():
        parts.append(_figure("accuracy.png", "Our test accuracy per stage, with the book's numbers as markers"))
    if ladder:      # compare.ladder: an introduction, then one sentence per rung
        parts += [f"<p>{html.escape(ladder[0])}</p><ul>", *[f"<li>{html.escape(line)}</li>" for line in ladder[1:]],
                  "</ul>"]
    parts += ["<h3>Settings that differ between stages</h3>", _md_table_to_html(settings), "<h2>Training curves</h2>"]
    titles = {row["stage"]: row["title"] for row in rows}
    for stage in TRAINING_STAGES:
        if (source / "curves" / f"{stage}.png").exists():
            parts.append(_figure(link(f"curves/{stage}.png"), f"{stage}: {titles.get(stage, '')}",
                                 "raw per-epoch values (dots) and the book's EMA smoothing, factor 0.8 (lines)"))
    parts += _data_and_classes(split_dir, metrics_dir, source, link)
    figures = figure_index(source)
    if figures:
        parts.append("<h2>What the convnets learned</h2>")
        parts += [_figure(link(f"figures/{entry['file']}"), entry.get("title", entry["file"]), entry.get("caption", ""))
                  for entry in figures]
    parts.append("</body></html>")
    path = reports / "index.html"
    write_text(path, "\n".join(parts))
    return path


def _data_and_classes(split_dir: Path | None, metrics_dir: Path | None, source: Path, link) -> list[str]:
    """The split's classes and counts, and each stage's per-class test figures with its confusion matrix."""
    parts = []
    report_path = Path(split_dir or "/nonexistent") / "report.json"
    if split_dir is not None and report_path.exists():
        report = json.loads(report_path.read_text())
        counts = report.get("counts", {})
        classes = report.get("classes") or list(counts.get("train", {}))
        rows = ["<table><thead><tr><th>class</th><th>train</th><th>validation</th><th>test</th></tr></thead><tbody>"]
        rows += [f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{counts.get(split, {}).get(name, 0)}</td>"
                                                             for split in ("train", "validation", "test")) + "</tr>"
                 for name in classes]
        parts += ["<h2>Data: classes and split</h2>",
                  f"<p>{len(classes)} classes ({html.escape(report.get('layout', 'kaggle'))} layout), images per "
                  f"class and split; {report.get('skipped', 0)} files skipped (data/split/report.json).</p>",
                  "".join(rows + ["</tbody></table>"])]
    if metrics_dir is None:
        return parts
    metrics_dir = Path(metrics_dir)
    stages = [(stage, json.loads((metrics_dir / f"{stage}.json").read_text())) for stage in TRAINING_STAGES
              if (metrics_dir / f"{stage}.json").exists()]
    stages = [(stage, m) for stage, m in stages if m.get("test/per_class")]
    if stages:
        parts.append("<h2>Per class: precision, recall, confusion matrix (test split)</h2>")
    for stage, m in stages:
        rows = [f"<h3>{html.escape(stage)}: accuracy {100 * float(m['test/acc']):.1f}%, macro-F1 "
                f"{float(m['test/macro_f1']):.3f}</h3>",
                "<table><thead><tr><th>class</th><th>images</th><th>precision</th><th>recall</th><th>F1</th></tr>"
                "</thead><tbody>"]
        rows += [f"<tr><td>{html.escape(name)}</td><td>{f['images']}</td><td>{100 * f['precision']:.1f}%</td>"
                 f"<td>{100 * f['recall']:.1f}%</td><td>{f['f1']:.3f}</td></tr>"
                 for name, f in m["test/per_class"].items()]
        parts.append("".join(rows + ["</tbody></table>"]))
        if (source / "confusion" / f"{stage}.png").exists():
            parts.append(_figure(link(f"confusion/{stage}.png"), f"{stage}: confusion matrix",
                                 "rows: true class, columns: predicted; each cell's count and share of its row"))
    return parts


def referenced_files(html_path: Path) -> list[Path]:
    """Every local file the page points at (for tests and the browser check)."""
    import re
    text = Path(html_path).read_text()
    return [Path(html_path).parent / src for src in re.findall(r'src="([^"]+)"', text)]


START, END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, comparison: Path, note: str = "") -> None:
    """Put the generated comparison table into the README between the results markers."""
    text = Path(readme).read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} ... {END} markers")
    table = Path(comparison).read_text(encoding="utf-8").split("\n", 2)[2].strip()    # drop the title line
    body = f"{START}\n{note.strip()}\n\n{table}\n{END}" if note else f"{START}\n{table}\n{END}"
    head, rest = text.split(START, 1)
    write_text(readme, head + body + rest.split(END, 1)[1])


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="copy reports/comparison.md into the README's results section")
    parser.add_argument("readme", type=Path)
    parser.add_argument("comparison", type=Path)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    update_readme(args.readme, args.comparison, args.note)
