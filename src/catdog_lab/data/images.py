"""Reading one photo safely: bad files reported (never a crash). Which files are photos of which class:
data/discover.py."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def open_rgb(source: Path | bytes, max_pixels: int) -> tuple[Image.Image | None, str]:
    """Decode fully, apply the EXIF orientation and convert to RGB. `source`: a file or its bytes (a served
    request). Returns (image, note) or (None, reason-it-was-skipped).

    The one decoder of the project: split (training data) and predict/serving go through it, so a phone
    photo stored sideways with an EXIF Orientation tag is upright for both."""
    is_bytes = isinstance(source, (bytes, bytearray))
    if (len(source) if is_bytes else source.stat().st_size) == 0:
        return None, "empty file (0 bytes)"
    suffix = "" if is_bytes else source.suffix.lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if is_bytes else source) as img:
                fmt, mode = img.format, img.mode
                width, height = img.size
                if width * height > max_pixels:
                    return None, f"too large: {width}x{height} > data.max_image_pixels={max_pixels}"
                img.load()                       # full decode: catches truncated files
                note = "" if mode == "RGB" else f"converted {mode} to RGB"
                if fmt not in ("JPEG",) and suffix in (".jpg", ".jpeg"):
                    note = (note + "; " if note else "") + f"{fmt} data in a .jpg file"
                img = _upright(img)
                if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in img.info):
                    background = Image.new("RGB", img.size, (255, 255, 255))
                    background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
                    rgb = background
                else:
                    rgb = img.convert("RGB")
        if min(rgb.size) < 1:
            return None, "zero-sized image"
        return rgb, note
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, f"decompression bomb: {exc}"
    except UnidentifiedImageError:
        return None, "not an image (unidentified format)"
    except (OSError, SyntaxError, ValueError) as exc:   # truncated / corrupt data
        return None, f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def _upright(img: Image.Image) -> Image.Image:
    """Rotate/flip by the EXIF Orientation tag. A malformed EXIF block is ignored (the pixels are still
    good): orientation is a hint, not a reason to skip a photo."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:       # PIL raises assorted errors on broken EXIF (struct.error, KeyError, ...)
        return img

