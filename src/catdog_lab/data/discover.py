"""Which photos belong to which class (file discovery only; decoding is data/images.py's job).

Two layouts (`data.source.layout`):
  kaggle   the book's data: cat.<id>.jpg files, or PetImages-style Cat/ Dog/ folders (classes cat, dog)
  folders  any folder holding one folder per class (any names, images at any depth below each); the
           classes are the sorted folder names, or `data.classes` (a subset, in its order)

Nothing is dropped silently in the folders layout: a folder that is not a class, a class folder without
images, files outside the class folders, non-image files, links that are not followed (to a folder, or to
nothing), and the same photo (by content) under two classes are each returned in `Discovery` for the split
report (the photo under two classes is left out of both). In either layout, so are the members of a zip
archive that the archive itself had damaged (`sources.damaged_members`).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from catdog_lab import BOOK_CLASSES
from catdog_lab.data.images import IMAGE_SUFFIXES
from catdog_lab.data.sources import damaged_members, sha256_file
from catdog_lab.errors import ConfigError, DataError

LAYOUTS = ("kaggle", "folders")
_KAGGLE_NAME = re.compile(r"^(cat|dog)\.(\d+)\.[A-Za-z]+$", re.IGNORECASE)
_PET_FOLDER = {"cat": "cat", "cats": "cat", "dog": "dog", "dogs": "dog"}
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Candidate:
    path: Path        # absolute
    rel: str          # relative to the source root, posix
    label: str        # a class name
    key: tuple        # stable sort key (numeric id where there is one)


@dataclass
class Discovery:
    classes: tuple[str, ...]
    candidates: list[Candidate]
    layout: str
    not_classes: list[dict] = field(default_factory=list)   # {"folder", "reason"}
    outside: list[str] = field(default_factory=list)        # files outside every class folder
    ignored: list[dict] = field(default_factory=list)       # {"file", "class", "reason"}: not image files
    conflicts: list[dict] = field(default_factory=list)     # {"sha256", "files", "classes"}: left out
    links: list[dict] = field(default_factory=list)         # {"file", "class", "reason"}: links not followed
    damaged: list[dict] = field(default_factory=list)       # {"file", "class", "reason"}: unreadable zip members

    def left_out_line(self) -> str:
        """One line saying what was left out and why ("" when nothing was)."""
        parts = []
        if self.not_classes:
            parts.append(f"{len(self.not_classes)} folder(s) not a class ("
                         + ", ".join(f"{row['folder']}: {row['reason']}" for row in self.not_classes[:3])
                         + (", ..." if len(self.not_classes) > 3 else "") + ")")
        if self.outside:
            parts.append(f"{len(self.outside)} file(s) outside the class folders")
        if self.ignored:
            parts.append(f"{len(self.ignored)} non-image file(s)")
        if self.links:
            parts.append(f"{len(self.links)} link(s) not followed")
        if self.damaged:
            parts.append(f"{len(self.damaged)} damaged archive member(s)")
        if self.conflicts:
            parts.append(f"{sum(len(c['files']) for c in self.conflicts)} file(s) of {len(self.conflicts)} "
                         f"photo(s) found under two or more classes")
        return ("left out: " + "; ".join(parts) + " (listed in the split report)") if parts else ""

    def report(self) -> dict:
        return {"layout": self.layout, "classes": list(self.classes), "not_classes": self.not_classes,
                "outside_class_folders": self.outside, "not_images": self.ignored, "under_two_classes": self.conflicts,
                "links_not_followed": self.links, "damaged_in_archive": self.damaged}


def discover(root: Path, layout: str = "kaggle", classes=None, min_classes: int = 2,
             known: tuple[str, ...] = ()) -> Discovery:
    """The classes and the candidate photos of each under `root`, by `layout` (`classes`: data.classes).
    `min_classes`: 2 for training data; 1 for a labelled folder to evaluate a model on, whose classes are
    `known` (a lone folder of that name is a class, not a wrapper: see `_folders`)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"data.source.layout: must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    wanted = _wanted(classes)
    found = _kaggle(root, wanted) if layout == "kaggle" else _folders(root, wanted, tuple(known) + (wanted or ()))
    found.damaged = [{"file": row["file"], "reason": row["reason"],
                      "class": next((part for part in reversed(Path(row["file"]).parts[:-1]) if part in found.classes),
                                    "")} for row in damaged_members(root)]
    if len(found.classes) < min_classes:
        raise DataError(f"{root}: {len(found.classes)} class(es) found ({', '.join(found.classes) or 'none'}); "
                        + ("a classifier needs at least two" if min_classes == 2 else "expected class folders"))
    return found


def _wanted(classes) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, str) or not all(isinstance(name, str) and name for name in classes):
        raise ConfigError(f"data.classes: must be null or a list of class (folder) names, got {classes!r}")
    names = tuple(classes)
    if len(set(names)) != len(names):
        raise ConfigError(f"data.classes: a class is named twice in {list(names)}")
    if len(names) < 2:
        raise ConfigError(f"data.classes: name at least two classes (or null for every folder), got {list(names)}")
    return names


def _kaggle(root: Path, wanted) -> Discovery:
    """Kaggle names (cat.12.jpg) or PetImages-style Cat/ Dog/ folders: the book's two classes."""
    if wanted is not None and set(wanted) - set(BOOK_CLASSES):
        raise ConfigError(f"data.classes: the kaggle layout's classes are {', '.join(BOOK_CLASSES)}, got "
                          f"{list(wanted)} (a folder of class folders: data.source.layout=folders)")
    classes = wanted or BOOK_CLASSES
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES and not _KAGGLE_NAME.match(path.name):
            continue
        rel = path.relative_to(root).as_posix()
        match = _KAGGLE_NAME.match(path.name)
        if match:
            label, ident = match.group(1).lower(), int(match.group(2))
        elif path.parent.name.lower() in _PET_FOLDER:
            label = _PET_FOLDER[path.parent.name.lower()]
            ident = int(path.stem) if path.stem.isdigit() else path.stem
        else:
            continue
        if label not in classes:
            continue
        key = (0, ident, rel) if isinstance(ident, int) else (1, 0, rel)
        found.append(Candidate(path=path, rel=rel, label=label, key=key))
    if not found:
        raise DataError(f"no cat/dog images found under {root} (expected cat.<id>.jpg files or Cat/ Dog/ folders; "
                        f"a folder of class folders with other names: data.source.layout=folders)")
    return Discovery(classes=tuple(classes), candidates=found, layout="kaggle",
                     not_classes=[{"folder": name, "reason": "not in data.classes"}
                                  for name in BOOK_CLASSES if name not in classes])


def _visible(path: Path) -> bool:
    """Hidden entries (.DS_Store, .complete markers, .git) and macOS' __MACOSX zip folders are not data."""
    return not path.name.startswith(".") and path.name != "__MACOSX"


def natural_key(text: str) -> tuple:
    """'cat.9.jpg' before 'cat.10.jpg': digit runs compare as numbers (so numbered photos keep the order
    the kaggle layout gives them, whatever their folder is called)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(text) if part)


def _folders(root: Path, wanted, known: tuple[str, ...] = ()) -> Discovery:
    """One folder per class below `root`, or below its only folder, as zip archives often wrap theirs: when
    that folder holds two or more folders, or one of a `known` class name, and is not itself of one (a
    held-out folder of cats only, with photos in `cats/sub/`, is the class `cats`, not a wrapper of `sub`)."""
    entries = [p for p in sorted(root.iterdir()) if _visible(p)]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in known:
        inner = [p for p in sorted(entries[0].iterdir()) if _visible(p)]
        inner_dirs = [p.name for p in inner if p.is_dir()]
        if len(inner_dirs) >= 2 or any(name in known for name in inner_dirs):
            root, entries = entries[0], inner
    folders = {p.name: p for p in entries if p.is_dir()}
    outside = [p.relative_to(root).as_posix() for p in entries if p.is_file()]
    if wanted is not None:
        missing = [name for name in wanted if name not in folders]
        if missing:
            raise ConfigError(f"data.classes: no folder {missing[0]!r} under {root}; folders: "
                              f"{', '.join(folders) or 'none'}")
    images: dict[str, list[Candidate]] = {}
    ignored, not_classes, links = [], [], []
    for name, folder in folders.items():
        if wanted is not None and name not in wanted:
            not_classes.append({"folder": name, "reason": "not in data.classes"})
            continue
        images[name] = []
        for path in sorted(folder.rglob("*")):
            if not all(_visible(part) for part in map(Path, path.relative_to(folder).parts)):
                continue
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() and not path.is_file():     # not followed: a loop or another tree could hide there
                links.append({"file": rel, "class": name, "reason": "a link to a folder (not followed)"
                              if path.is_dir() else "a link to nothing (broken)"})
                continue
            if not path.is_file():
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                ignored.append({"file": rel, "class": name,
                                "reason": f"not an image file ({path.suffix or 'no suffix'})"})
                continue
            images[name].append(Candidate(path=path, rel=rel, label=name,
                                          key=natural_key(path.relative_to(folder).as_posix())))
    empty = [name for name, found in images.items() if not found]
    if wanted is not None and empty:
        raise DataError(f"class {empty[0]!r}: no images under {folders[empty[0]]} (data.classes names it; "
                        f"image files end in {', '.join(sorted(IMAGE_SUFFIXES))})")
    for name in empty:
        not_classes.append({"folder": name, "reason": "no images"})
        del images[name]
    classes = tuple(wanted) if wanted is not None else tuple(sorted(images))
    candidates, conflicts = _without_conflicts([cand for name in classes for cand in images[name]])
    return Discovery(classes=classes, candidates=candidates, layout="folders", not_classes=not_classes,
                     outside=outside, ignored=ignored, conflicts=conflicts, links=links)


def _without_conflicts(candidates: list[Candidate]) -> tuple[list[Candidate], list[dict]]:
    """The same photo (same bytes) under two classes has no one label: left out of both, and listed."""
    by_hash: dict[str, list[Candidate]] = defaultdict(list)
    for cand in candidates:
        by_hash[sha256_file(cand.path)].append(cand)
    conflicts, bad = [], set()
    for sha, group in by_hash.items():
        labels = sorted({cand.label for cand in group})
        if len(labels) > 1:
            conflicts.append({"sha256": sha, "files": [cand.rel for cand in group], "classes": labels})
            bad.update(cand.rel for cand in group)
    conflicts.sort(key=lambda row: row["files"])
    return [cand for cand in candidates if cand.rel not in bad], conflicts


def stream_name(position: int, n_classes: int) -> str:
    """The name of class `position`'s shuffle stream in the split. By position, not by folder name, so the
    same photos under other folder names split the same way; two classes keep the book split's streams
    (cat, dog), so two class folders holding the Kaggle photos give exactly the kaggle layout's split."""
    return BOOK_CLASSES[position] if n_classes == 2 else f"class{position}"
