"""The one decoder (data/images.py `open_rgb` / `to_rgb`): every Pillow mode to the right 8-bit RGB pixels.

Each case builds a small image with known content (a gradient, two known colours), decodes it the way the
split and predict do, and compares the pixels with the expected ones. Files go through `open_rgb` (bytes
of a real PNG / TIFF / JPEG); modes no common format stores go through `to_rgb`.
"""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from catdog_lab.data.images import ALPHA_BACKGROUND, check_shape, open_rgb, to_rgb
from conftest import SHARED_DATA, make_photo

W, H = 256, 4                            # a gradient 0..255 along x
GRADIENT = np.tile(np.arange(W, dtype=np.uint8), (H, 1))
RED, BLUE = (200, 30, 40), (20, 60, 220)
BIG = 10 ** 8                            # no pixel-count limit in these tests


def _bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    image, note = open_rgb(data, BIG)
    assert image is not None, note
    assert image.mode == "RGB"
    return np.asarray(image)


def _gray(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


def _halves(left, right, width=8, height=4) -> np.ndarray:
    """RGB array: the left half one colour, the right half another."""
    out = np.zeros((height, width, 3), np.uint8)
    out[:, : width // 2], out[:, width // 2:] = left, right
    return out


def test_rgb_and_8bit_grayscale_gradients():
    rgb = np.stack([GRADIENT, 255 - GRADIENT, np.full_like(GRADIENT, 7)], axis=2)
    assert np.array_equal(_decoded(_bytes(Image.fromarray(rgb))), rgb)
    assert np.array_equal(_decoded(_bytes(Image.fromarray(GRADIENT))), _gray(GRADIENT))


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_grayscale_is_scaled_not_clipped(mode):
    """Pillow's convert('L') clips 16-bit values at 255: the gradient would be white from x = 1 on."""
    values = GRADIENT.astype(np.uint16) * 257                  # 0..65535, the 16-bit full scale
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (W, H), values.astype(dtype).tobytes())
    assert np.array_equal(np.asarray(to_rgb(image)), _gray(GRADIENT))
    if mode == "I;16":                                          # a real 16-bit PNG file, as a user has one
        data = _bytes(image)
        assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
        assert np.array_equal(_decoded(data), _gray(GRADIENT))


def test_32bit_integer_grayscale():
    # 16-bit data held in mode I (how Pillow long opened 16-bit PNGs): the 16-bit full scale
    sixteen = Image.frombytes("I", (W, H), (GRADIENT.astype("<i4") * 257).tobytes())
    assert np.array_equal(np.asarray(to_rgb(sixteen)), _gray(GRADIENT))
    # 8-bit data in mode I: 0..255 is its range, not 1/257 of 16 bits
    eight = Image.frombytes("I", (W, H), GRADIENT.astype("<i4").tobytes())
    assert np.array_equal(np.asarray(to_rgb(eight)), _gray(GRADIENT))
    # beyond 16 bits, or negative: the image's own range, stretched to 0..255
    wide = Image.frombytes("I", (W, H), (GRADIENT.astype("<i4") * 1_000_000 - 7_000_000).tobytes())
    assert np.array_equal(np.asarray(to_rgb(wide)), _gray(GRADIENT))
    tiff = _bytes(eight, "TIFF")
    assert np.array_equal(_decoded(tiff), _gray(GRADIENT))


def test_float_grayscale():
    for scale, offset in ((1 / 255, 0.0), (1.0, 0.0), (0.01, -1.0)):   # 0..1, 0..255, and -1..1.55 (own range)
        values = (GRADIENT.astype("<f4") * np.float32(scale) + np.float32(offset))
        image = Image.frombytes("F", (W, H), values.tobytes())
        assert np.abs(np.asarray(to_rgb(image)).astype(int) - _gray(GRADIENT)).max() == 0, (scale, offset)
    assert np.array_equal(_decoded(_bytes(Image.frombytes("F", (W, H), (GRADIENT.astype("<f4") / 255).tobytes()),
                                          "TIFF")), _gray(GRADIENT))
    nan = Image.frombytes("F", (2, 1), np.array([0.0, np.nan], "<f4").tobytes())
    with pytest.raises(ValueError, match="NaN"):
        to_rgb(nan)


def test_one_bit():
    bits = Image.fromarray(_halves(0, 255)[..., 0]).convert("1")
    assert Image.open(io.BytesIO(_bytes(bits))).mode == "1"
    assert np.array_equal(_decoded(_bytes(bits)), _halves((0, 0, 0), (255, 255, 255)))


def test_alpha_is_composited_on_the_documented_background():
    assert ALPHA_BACKGROUND == (255, 255, 255)
    # RGBA: red opaque, blue fully transparent; then blue at alpha 128
    rgba = np.zeros((4, 8, 4), np.uint8)
    rgba[..., :3] = _halves(RED, BLUE)
    rgba[:, :4, 3], rgba[:, 4:, 3] = 255, 0
    assert np.array_equal(_decoded(_bytes(Image.fromarray(rgba, "RGBA"))), _halves(RED, ALPHA_BACKGROUND))
    rgba[:, 4:, 3] = 128
    half = np.rint(np.array(BLUE) * 128 / 255 + np.array(ALPHA_BACKGROUND) * 127 / 255)
    got = _decoded(_bytes(Image.fromarray(rgba, "RGBA")))
    assert np.abs(got[:, 4:].astype(int) - half).max() <= 1 and np.array_equal(got[:, :4], _halves(RED, RED)[:, :4])
    # LA: gray 100 opaque, gray 30 transparent
    la = Image.merge("LA", [Image.fromarray(_halves(100, 30)[..., 0]), Image.fromarray(_halves(255, 0)[..., 0])])
    assert np.array_equal(_decoded(_bytes(la)), _halves((100, 100, 100), ALPHA_BACKGROUND))


def test_palette_with_and_without_transparency():
    index = Image.fromarray(_halves(0, 1)[..., 0], "L").convert("P")      # indices 0 | 1
    index.putpalette([*RED, *BLUE] + [0] * 762)
    assert np.array_equal(_decoded(_bytes(index)), _halves(RED, BLUE))
    index.info["transparency"] = 1                                        # PNG tRNS: index 1 transparent
    data = _bytes(index, transparency=1)
    assert Image.open(io.BytesIO(data)).mode == "P"
    assert np.array_equal(_decoded(data), _halves(RED, ALPHA_BACKGROUND))
    # GIF transparency, and PA (a palette image with its own alpha band)
    assert np.array_equal(_decoded(_bytes(index, "GIF", transparency=1)), _halves(RED, ALPHA_BACKGROUND))
    pa = index.convert("PA")
    assert pa.mode == "PA"
    assert np.array_equal(np.asarray(to_rgb(pa)), _halves(RED, ALPHA_BACKGROUND))


def test_grayscale_with_transparent_value():
    gray = Image.fromarray(_halves(100, 30)[..., 0], "L")
    data = _bytes(gray, transparency=30)                                  # PNG tRNS for grayscale: value 30
    assert np.array_equal(_decoded(data), _halves((100, 100, 100), ALPHA_BACKGROUND))


def test_cmyk_and_ycbcr():
    cmyk = np.zeros((4, 8, 4), np.uint8)
    cmyk[:, :4] = (255, 0, 0, 0)                    # pure cyan
    cmyk[:, 4:] = (0, 0, 0, 255)                    # pure black
    assert np.array_equal(_decoded(_bytes(Image.fromarray(cmyk, "CMYK"), "TIFF")), _halves((0, 255, 255), (0, 0, 0)))
    # a CMYK JPEG (print workflows write them; Adobe's inverted storage is undone by the reader)
    got = _decoded(_bytes(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100))
    assert np.abs(got.astype(int) - _halves((0, 255, 255), (0, 0, 0))).max() <= 3
    ycc = Image.fromarray(_halves(RED, BLUE)).convert("YCbCr")
    assert ycc.mode == "YCbCr"
    assert np.abs(np.asarray(to_rgb(ycc)).astype(int) - _halves(RED, BLUE)).max() <= 2


def test_exif_orientation_is_applied_before_conversion():
    """A sideways grayscale PNG with EXIF Orientation 6 (shown rotated 90 degrees clockwise)."""
    image = Image.fromarray(_halves(0, 255, width=8, height=4)[..., 0], "L")
    exif = Image.Exif()
    exif[0x0112] = 6
    got = _decoded(_bytes(image, exif=exif.tobytes()))
    assert got.shape == (8, 4, 3)                                          # upright: 4 wide, 8 high
    assert (got[:4] == 0).all() and (got[4:] == 255).all()                 # left half is now on top


def test_shape_limits():
    assert check_shape(150, 150, 32, 8) == ""
    assert check_shape(1, 1, 32, 8) == "too small: 1x1, a side < data.min_image_side=32"
    assert check_shape(400, 30, 32, 8) == "too small: 400x30, a side < data.min_image_side=32"
    assert check_shape(900, 100, 32, 8) == "aspect ratio 9.0:1 of 900x100 > data.max_aspect_ratio=8"
    assert check_shape(800, 100, 32, 8) == ""
    tiny = _bytes(Image.new("RGB", (1, 1), RED))
    assert open_rgb(tiny, BIG, 32, 8) == (None, "too small: 1x1, a side < data.min_image_side=32")
    assert open_rgb(tiny, BIG)[0] is not None                             # the defaults check only the pixel count


def _png16_rgb(values: np.ndarray) -> bytes:
    """A 48-bit (16 bits per channel) RGB PNG: Pillow cannot write one, so it is written by hand."""
    height, width, _ = values.shape
    raw = b"".join(b"\0" + values[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16bit_cat_decodes_to_its_8bit_original(tmp_path):
    """A real cat photo (the local copy of the photos when present, else a generated one) saved with 16 bits
    per sample, grayscale and colour, decodes to the 8-bit original within 1."""
    source = SHARED_DATA / "cat.1.jpg"
    if not source.is_file():
        source = make_photo(tmp_path / "cat.1.jpg", "cat", 1, size=(120, 90))
    original, _ = open_rgb(source, BIG)
    rgb = np.asarray(original)
    gray = np.asarray(original.convert("L"))
    gray16 = Image.frombytes("I;16", gray.shape[::-1], (gray.astype("<u2") * 257).tobytes())
    decoded = _decoded(_bytes(gray16))
    assert np.abs(decoded.astype(int) - _gray(gray)).max() <= 1
    decoded = _decoded(_png16_rgb(rgb.astype(np.uint16) * 257))
    assert np.abs(decoded.astype(int) - rgb).max() <= 1


def test_split_and_predict_share_the_decoder_and_its_limits(tmp_path):
    """The split skips and lists what predict refuses, with the same one-line reason; a 16-bit PNG enters the
    training cache as the picture it is, not as a white square."""
    import torch

    from catdog_lab.config import compose
    from catdog_lab.data.cache import cache_files, open_images
    from catdog_lab.data.split import make_split
    from catdog_lab.predict import Predictor
    from conftest import make_dataset

    data = compose().data
    limits = dict(min_side=int(data.min_image_side), max_aspect=float(data.max_aspect_ratio))
    root = make_dataset(tmp_path / "raw", per_class=5)
    tiny = root / "cat.90.png"
    Image.new("RGB", (1, 1), RED).save(tiny)
    strip = root / "dog.91.png"
    Image.new("RGB", (40 * int(data.max_aspect_ratio) + 40, 40), BLUE).save(strip)
    gray = np.asarray(Image.open(root / "cat.1.jpg").convert("L"))
    wide = root / "cat.1.jpg"
    wide.unlink()
    wide = root / "cat.1.png"
    Image.frombytes("I;16", gray.shape[::-1], (gray.astype("<u2") * 257).tobytes()).save(wide)

    # fractions: every photo is inspected (counts stop once enough are usable)
    result = make_split(root, {"train": 0.6, "validation": 0.2, "test": 0.2}, seed=0, image_size=48, max_pixels=10 ** 7,
                        cache_dir=tmp_path / "cache", **limits)
    reasons = {row["file"]: row["reason"] for row in result["skipped"]}
    assert reasons == {"cat.90.png": f"too small: 1x1, a side < data.min_image_side={data.min_image_side}",
                       "dog.91.png": f"aspect ratio {int(data.max_aspect_ratio) + 1}.0:1 of "
                                     f"{40 * int(data.max_aspect_ratio) + 40}x40 > "
                                     f"data.max_aspect_ratio={data.max_aspect_ratio:g}"}

    class ConstantLogit(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3)) * 0

    predictor = Predictor(ConstantLogit(), 48)              # the limits from conf/, as catdog-predict has them
    assert (predictor.min_side, predictor.max_aspect) == (limits["min_side"], limits["max_aspect"])
    errors = [result["error"] for result in predictor.predict([tiny, strip, wide])]
    assert errors == [reasons["cat.90.png"], reasons["dog.91.png"], None]

    # the 16-bit photo in the training cache: the pixels of its 8-bit original, resized the same way
    [split] = [row["split"] for row in result["manifest"] if row["file"] == "cat.1.png"]
    meta, images = cache_files(tmp_path / "cache", split)
    files = torch.load(meta, weights_only=True)["files"]
    got = open_images(images)[files.index("cat.1.png")].numpy().astype(int)
    want = np.asarray(Image.fromarray(gray).convert("RGB").resize((48, 48), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.abs(got - want).max() <= 1


def test_split_run_name_comes_from_the_counts_made():
    from catdog_lab.stages.split import run_name

    assert run_name({"train": {"cat": 100, "dog": 100}, "validation": {"cat": 50, "dog": 50},
                     "test": {"cat": 50, "dog": 50}}) == "0 split: 2 classes, 100/50/50 per class"
    assert run_name({"train": {"cat": 800, "dog": 790}, "validation": {"cat": 100, "dog": 98},
                     "test": {"cat": 100, "dog": 99}}) == \
        "0 split: 2 classes, 1590/198/199 images (train/validation/test)"
