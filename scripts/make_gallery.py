"""Copy a few figures of a finished run into docs/gallery/, downscaled, with their titles and captions.

    python scripts/make_gallery.py --run /tmp/run --out docs/gallery --command "<the command that made the run>"

The gallery lets a visitor see what the pipeline makes without installing anything, so it must stay
small in git: every image is at most --width pixels wide, saved as JPEG, and the script stops if one
file is over 500 KiB or all of them together over 4 MiB.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

MAX_FILE, MAX_TOTAL = 500 * 1024, 4 * 1024 * 1024
# (glob under <run>/reports, how many of the matches): one or a few of each kind of figure
WANTED = [("figures/primer_*.png", 1), ("figures/activations_*_conv2d_1.png", 1),
          ("figures/activations_*_conv2d_4.png", 1), ("figures/filters_vgg16_*.png", 4),
          ("figures/gradcam_*.png", 1), ("figures/attributions_*.png", 1), ("figures/sanity_*.png", 1),
          ("figures/misclassified_*.png", 1), ("curves/*.png", 5), ("accuracy.png", 1)]


def shrink(src: Path, dest: Path, width: int) -> int:
    image = Image.open(src).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    image.save(dest, format="JPEG", quality=82, optimize=True)
    return dest.stat().st_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a run folder with reports/ (figures/, curves/)")
    p.add_argument("--out", type=Path, default=Path("docs/gallery"))
    p.add_argument("--width", type=int, default=900)
    p.add_argument("--command", default="", help="the command that made the run, recorded in the README")
    p.add_argument("--note", default="", help="more about the run (data, weights, results), recorded too")
    args = p.parse_args()
    reports = args.run / "reports"
    index_file = reports / "figures" / "index.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else []
    captions = {e["file"]: (e.get("title", ""), e.get("caption", "")) for e in index}
    rows, total = [], 0
    for pattern, count in WANTED:
        for src in sorted(reports.glob(pattern))[:count]:
            rel = src.relative_to(reports).with_suffix(".jpg")
            name = rel.as_posix().replace("/", "_") if rel.parts[0] == "curves" else rel.name
            size = shrink(src, args.out / name, args.width)
            if size > MAX_FILE:
                sys.exit(f"error: {name}: {size / 1024:.0f} KiB after downscaling, over {MAX_FILE // 1024} KiB")
            total += size
            title, caption = captions.get(src.name, (f"Training curves: {src.stem}" if rel.parts[0] == "curves"
                                                     else src.stem.replace("_", " "), ""))
            rows.append((name, title, caption, size))
    if total > MAX_TOTAL:
        sys.exit(f"error: the gallery is {total / 2**20:.1f} MiB, over {MAX_TOTAL // 2**20} MiB")
    lines = ["# Gallery: figures of one real run", "",
             "Downscaled copies (JPEG, at most %d px wide) made by `scripts/make_gallery.py`." % args.width, ""]
    if args.command:
        lines += ["The run:", "", "```bash", args.command, "```", ""]
    if args.note:
        lines += [args.note, ""]
    for name, title, caption, size in rows:
        lines += [f"### {title}", "", f"![{title}]({name})", ""] + ([caption, ""] if caption else [])
    (args.out / "README.md").write_text("\n".join(lines))
    print(f"{len(rows)} images, {total / 2**20:.2f} MiB in {args.out}")


if __name__ == "__main__":
    main()
