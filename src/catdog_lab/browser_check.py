"""Open an HTML file in headless Chromium and report broken images and console errors.

    python -m catdog_lab.browser_check reports/index.html [--screenshot out.png]
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'));
  document.body.setAttribute('data-images', String(document.images.length));
  document.body.setAttribute('data-broken', broken.join('|'));
});</script>"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files"]


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def check_page(html: Path, screenshot: Path | None = None, timeout: int = 120) -> dict:
    """{"images": n, "broken": [...], "console_errors": [...]} for a local HTML file."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    html = Path(html).resolve()
    probe = html.with_name(f".probe_{html.name}")           # same folder: relative links keep working
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                                   "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                                  capture_output=True, text=True, timeout=timeout)
            if screenshot:
                subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2000",
                                f"--screenshot={Path(screenshot).resolve()}", html.as_uri()],
                               capture_output=True, text=True, timeout=timeout)
    finally:
        probe.unlink(missing_ok=True)
    images = re.search(r'data-images="(\d+)"', proc.stdout)
    broken = re.search(r'data-broken="([^"]*)"', proc.stdout)
    if images is None or broken is None:
        raise RuntimeError(f"the page did not finish loading in chromium: {proc.stderr[-500:]}")
    errors = [line for line in proc.stderr.splitlines()
              if "CONSOLE" in line and ("ERROR" in line.upper() or "Failed to load" in line)]
    return {"images": int(images.group(1)), "broken": [b for b in broken.group(1).split("|") if b],
            "console_errors": errors}


if __name__ == "__main__":
    args = sys.argv[1:]
    shot = Path(args[args.index("--screenshot") + 1]) if "--screenshot" in args else None
    result = check_page(Path(args[0]), shot)
    print(f"{result['images']} images, {len(result['broken'])} broken, {len(result['console_errors'])} console errors")
    for item in result["broken"] + result["console_errors"]:
        print("  ", item)
    sys.exit(1 if result["broken"] or result["console_errors"] else 0)
