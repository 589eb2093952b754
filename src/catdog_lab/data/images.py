"""Reading one photo safely: bad files reported (never a crash). Which files are photos of which class:
data/discover.py."""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def open_rgb(source: Path | bytes, max_pixels: int, min_side: int = 1,
             max_aspect: float = math.inf) -> tuple[Image.Image | None, str]:
    """Decode fully, apply the EXIF orientation and convert to 8-bit RGB (`to_rgb`). `source`: a file or its
    bytes (a served request). Returns (image, note) or (None, reason-it-was-skipped).

    The one decoder of the project: split (training data) and predict/serving go through it, so a phone
    photo stored sideways with an EXIF Orientation tag is upright for both, and a 16-bit PNG is the same
    picture for both. The size limits (data.max_image_pixels, data.min_image_side, data.max_aspect_ratio;
    the defaults here check only the pixel count) are checked on the header, before any pixel is decoded."""
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
                refused = check_shape(width, height, min_side, max_aspect)
                if refused:
                    return None, refused
                img.load()                       # full decode: catches truncated files
                note = "" if mode == "RGB" else f"converted {mode} to RGB"
                if fmt not in ("JPEG",) and suffix in (".jpg", ".jpeg"):
                    note = (note + "; " if note else "") + f"{fmt} data in a .jpg file"
                rgb = to_rgb(_upright(img))
        return rgb, note
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, f"decompression bomb: {exc}"
    except UnidentifiedImageError:
        return None, "not an image (unidentified format)"
    except (OSError, SyntaxError, ValueError) as exc:   # truncated / corrupt data, a mode we cannot convert
        return None, f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def check_shape(width: int, height: int, min_side: int, max_aspect: float) -> str:
    """Why an image of this size means nothing to a 150 px classifier ("" when it is fine): a side under
    `min_side` pixels (a 1x1 pixel would be stretched into a flat square), or a side more than `max_aspect`
    times the other (a strip squeezed into a square)."""
    if min(width, height) < max(min_side, 1):
        return f"too small: {width}x{height}, a side < data.min_image_side={min_side}"
    if max(width, height) > max_aspect * min(width, height):
        return (f"aspect ratio {max(width, height) / min(width, height):.1f}:1 of {width}x{height} > "
                f"data.max_aspect_ratio={max_aspect:g}")
    return ""


# Transparent pixels are composited onto this colour: white, as a browser shows a transparent PNG on a
# page, and what a photo cut out of its background usually sat on.
ALPHA_BACKGROUND = (255, 255, 255)
# The full scale of grayscale data wider than 8 bits: a 16-bit sample means 0..65535 (PNG, TIFF). Mode "I"
# (32-bit) and "F" (float) have no useful nominal range: the first of these scales that holds every value
# of the image is used (an "I" image holding 16-bit data, an "F" image in 0..1 or 0..255), else the image's
# own min..max is stretched to 0..255. Never clipped: Pillow's own convert("L") clips, so a 16-bit photo
# becomes a white square.
WIDE_GRAY_SCALES = {"I;16": (65535,), "I": (255, 65535), "F": (1.0, 255.0, 65535.0)}


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 1-bit and 8-bit grayscale, 16/32-bit integer and float grayscale (scaled,
    see WIDE_GRAY_SCALES), palette, CMYK, YCbCr, LAB; alpha (RGBA, LA, PA, a palette or grayscale
    `transparency`) composited onto ALPHA_BACKGROUND."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        img = _wide_gray_to_l(img)
        mode = "L"
    if "A" in mode or "a" in mode or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, ALPHA_BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "LAB":
        from PIL import ImageCms
        return ImageCms.applyTransform(img, ImageCms.buildTransform(ImageCms.createProfile("LAB"),
                                                                    ImageCms.createProfile("sRGB"), "LAB", "RGB"))
    return img.convert("RGB")


def _wide_gray_to_l(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float grayscale -> 8-bit "L", scaled (WIDE_GRAY_SCALES), rounded."""
    import numpy as np

    values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"mode {img.mode}: NaN or infinite pixel values")
    low, high = float(values.min()), float(values.max())
    scales = WIDE_GRAY_SCALES["I;16" if img.mode.startswith("I;16") else img.mode]
    full = next((scale for scale in scales if low >= 0 and high <= scale), None)
    if full is None:                        # outside every nominal range: the image's own range
        values, full = values - low, (high - low) or 1.0
    scaled = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)          # uint8, 2-D: mode "L"


def _upright(img: Image.Image) -> Image.Image:
    """Rotate/flip by the EXIF Orientation tag. A malformed EXIF block is ignored (the pixels are still
    good): orientation is a hint, not a reason to skip a photo."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:       # PIL raises assorted errors on broken EXIF (struct.error, KeyError, ...)
        return img

