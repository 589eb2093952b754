import csv

import pytest
import torch

from catdog_lab.data.datamodule import load_cached_split
from catdog_lab.data.split import make_split
from catdog_lab.errors import DataError
from catdog_lab.stages.split import split
from conftest import make_dataset, make_photo

COUNTS = {"train": 4, "validation": 2, "test": 2}


def _files(result, name):
    return [m["file"] for m in result["manifest"] if m["split"] == name]


def test_split_is_deterministic_disjoint_and_balanced(tmp_path):
    root = make_dataset(tmp_path / "raw", per_class=10)
    a = make_split(root, COUNTS, seed=1, image_size=48, max_pixels=10**7, cache_dir=tmp_path / "a")
    b = make_split(root, COUNTS, seed=1, image_size=48, max_pixels=10**7, cache_dir=tmp_path / "b")
    c = make_split(root, COUNTS, seed=2, image_size=48, max_pixels=10**7, cache_dir=tmp_path / "c")
    assert a["manifest"] == b["manifest"]
    assert a["manifest"] != c["manifest"]
    train, val, test = (set(_files(a, s)) for s in ("train", "validation", "test"))
    assert not (train & val or train & test or val & test)
    assert a["report"]["counts"] == {s: {"cat": n, "dog": n} for s, n in COUNTS.items()}
    for row in a["manifest"]:
        assert row["file"].startswith(row["class"] + ".") and len(row["sha256"]) == 64
    images = load_cached_split(tmp_path / "a", "train")["images"]
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 48, 48)


def test_bad_files_are_skipped_or_converted_and_listed(tmp_path):
    root = make_dataset(tmp_path / "raw", per_class=10)
    (root / "cat.101.jpg").write_bytes(b"")                                  # zero bytes
    (root / "cat.102.jpg").write_bytes(b"definitely not an image")           # not an image
    good = (root / "cat.1.jpg").read_bytes()
    (root / "dog.103.jpg").write_bytes(good[: len(good) // 2])               # truncated
    make_photo(root / "dog.104.jpg", "dog", 104, mode="L")                   # grayscale
    make_photo(root / "cat.105.jpg", "cat", 105, mode="CMYK")                # CMYK jpeg
    make_photo(root / "dog.106.jpg", "dog", 106, mode="RGBA", fmt="PNG")     # RGBA png named .jpg
    result = make_split(root, {"train": 8, "validation": 2, "test": 1}, seed=0, image_size=48, max_pixels=10**7,
                        cache_dir=tmp_path / "cache")
    reasons = {s["file"]: s["reason"] for s in result["skipped"]}
    assert reasons["cat.101.jpg"].startswith("empty file")
    assert reasons["cat.102.jpg"].startswith("not an image")
    assert reasons["dog.103.jpg"].startswith("unreadable")
    notes = {c["file"]: c["note"] for c in result["report"]["converted"]}
    assert "L to RGB" in notes["dog.104.jpg"]
    assert "CMYK to RGB" in notes["cat.105.jpg"]
    assert "RGBA to RGB" in notes["dog.106.jpg"] and "PNG data in a .jpg" in notes["dog.106.jpg"]
    assert not set(reasons) & {m["file"] for m in result["manifest"]}


def test_too_large_images_are_skipped(tmp_path):
    root = make_dataset(tmp_path / "raw", per_class=4)
    make_photo(root / "cat.99.jpg", "cat", 99, size=(400, 300))
    result = make_split(root, {"train": 2, "validation": 1, "test": 1}, seed=0, image_size=48, max_pixels=100_000,
                        cache_dir=tmp_path / "cache")
    assert any(s["file"] == "cat.99.jpg" and s["reason"].startswith("too large") for s in result["skipped"])


def test_too_few_images_names_the_class_and_the_counts(tmp_path, capsys):
    root = make_dataset(tmp_path / "raw", per_class=5)
    with pytest.raises(DataError, match=r"class 'cat': only 5 images under .*, but data.split asks for 8 \(4\+2\+2\)"):
        make_split(root, COUNTS, seed=0, image_size=48, max_pixels=10**7, cache_dir=tmp_path / "cache")
    assert "split: check + decode" not in capsys.readouterr().err      # said before decoding a single photo
    # enough files but too few usable: known only once they are decoded
    root = make_dataset(tmp_path / "raw2", per_class=8)
    for i in (1, 2, 3):
        (root / f"cat.{i}.jpg").write_bytes(b"not a photo")
    with pytest.raises(DataError, match=r"class 'cat': only 5 usable images under .* \(8 found, 3 unusable\), but "
                                        r"data.split asks for 8"):
        make_split(root, COUNTS, seed=0, image_size=48, max_pixels=10**7, cache_dir=tmp_path / "cache2")


def test_fractions_adding_up_to_1_use_every_photo_and_smaller_ones_say_what_they_leave(tmp_path, capsys):
    root = make_dataset(tmp_path / "raw", per_class=30)
    whole = make_split(root, {"train": 0.5, "validation": 0.25, "test": 0.25}, seed=0, image_size=32,
                       max_pixels=10**7, cache_dir=tmp_path / "a")
    assert whole["report"]["counts"]["train"] == {"cat": 16, "dog": 16}        # 15 + the photo 7.5 + 7.5 leave
    assert whole["report"]["counts"]["test"] == {"cat": 7, "dog": 7} and not whole["report"]["unused_by_fractions"]
    part = make_split(root, {"train": 0.5, "validation": 0.2, "test": 0.2}, seed=0, image_size=32,
                      max_pixels=10**7, cache_dir=tmp_path / "b")
    assert part["report"]["counts"]["train"] == {"cat": 15, "dog": 15}
    assert part["report"]["unused_by_fractions"] == {"cat": 3, "dog": 3}
    assert "[split] data.split.fractions add up to 0.9: 6 usable photo(s) in no split (cat 3, dog 3)" \
        in capsys.readouterr().out
    # too few photos for a fraction: the key, and how many photos it takes (1 / 0.01 = 100)
    with pytest.raises(DataError, match=r"^class 'cat': 30 usable image\(s\) leave a split empty at data\.split\."
                                        r"fractions=\[0\.9,0\.05,0\.01\]: every split needs one, so at least 100 "):
        make_split(root, {"train": 0.9, "validation": 0.05, "test": 0.01}, seed=0, image_size=32,
                   max_pixels=10**7, cache_dir=tmp_path / "c")


def test_petimages_layout_and_zip_source(tmp_path, tiny_cfg):
    import zipfile

    from omegaconf import open_dict
    pet = tmp_path / "pet"
    for label, folder in (("cat", "Cat"), ("dog", "Dog")):
        for i in range(12):
            make_photo(pet / "PetImages" / folder / f"{i}.jpg", label, i)
    archive = tmp_path / "kagglecatsanddogs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in pet.rglob("*.jpg"):
            zf.write(path, path.relative_to(pet).as_posix())
    with open_dict(tiny_cfg):
        tiny_cfg.data.source.path = str(archive)
        tiny_cfg.data.source.download_dir = str(tmp_path / "dl")
    report = split(tiny_cfg)
    assert report["counts"]["train"] == {"cat": 6, "dog": 6}
    rows = list(csv.DictReader(open(tmp_path / "data/split/manifest.csv")))
    assert rows[0]["file"].startswith("PetImages/")


def test_fractions_split_every_usable_photo_of_each_class(tmp_path):
    root = make_dataset(tmp_path / "raw", per_class=10)
    (root / "cat.101.jpg").write_bytes(b"")                          # 11 cat files, 10 usable
    result = make_split(root, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=0, image_size=32,
                        max_pixels=10**7, cache_dir=tmp_path / "cache")
    assert result["report"]["counts"] == {"train": {"cat": 8, "dog": 8}, "validation": {"cat": 1, "dog": 1},
                                          "test": {"cat": 1, "dog": 1}}
    assert result["report"]["inspected"] == {"cat": 11, "dog": 10}      # fractions: every photo is checked
    assert [s["file"] for s in result["skipped"]] == ["cat.101.jpg"]


def test_parallel_decoding_gives_the_same_split_and_bytes(tmp_path):
    root = make_dataset(tmp_path / "raw", per_class=12)
    (root / "dog.99.jpg").write_bytes(b"not a photo")
    one = make_split(root, COUNTS, seed=3, image_size=40, max_pixels=10**7, cache_dir=tmp_path / "one", workers=1)
    two = make_split(root, COUNTS, seed=3, image_size=40, max_pixels=10**7, cache_dir=tmp_path / "two", workers=2)
    assert one["manifest"] == two["manifest"] and one["skipped"] == two["skipped"]
    for part in ("train", "validation", "test"):
        a, b = (tmp_path / name / f"{part}.images.npy" for name in ("one", "two"))
        assert a.read_bytes() == b.read_bytes()
    assert not list((tmp_path / "two").glob(".*.tmp"))                 # scratch files are gone


def test_mapped_images_serve_batches_and_release_their_pages(tmp_path):
    from catdog_lab.data.cache import MappedImages
    root = make_dataset(tmp_path / "raw", per_class=10)
    make_split(root, COUNTS, seed=0, image_size=24, max_pixels=10**7, cache_dir=tmp_path / "cache")
    cache = load_cached_split(tmp_path / "cache", "train")
    data = MappedImages(cache["images_path"], cache["labels"], release_every=1)
    batch = data.__getitems__([5, 0, 3])
    assert all(torch.equal(img, cache["images"][i]) and lbl == cache["labels"][i]
               for (img, lbl), i in zip(batch, [5, 0, 3]))
    import pickle
    again = pickle.loads(pickle.dumps(data))                              # DataLoader workers get a copy
    assert torch.equal(again[2][0], cache["images"][2])
