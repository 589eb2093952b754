"""Where the raw photos come from: a local folder, a local .zip, or the public download.

The download resumes (HTTP Range), shows a progress bar and verifies a SHA-256 when one is pinned.
Archives are extracted safely: no absolute paths, no `..`, no links, bounded size. A member the archive
itself has damaged (a bad CRC, a truncated stream) is skipped and listed in `DAMAGED`, for the split report.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from catdog_lab.errors import ConfigError, DataError
from catdog_lab.io import file_lock
from catdog_lab.progress import progress

MAX_MEMBER_BYTES = 200 * 1024 * 1024   # no photo of this data set is anywhere near this
MAX_ARCHIVE_BYTES = 4 * 1024**3        # the whole Microsoft archive unpacks to ~0.9 GB
DAMAGED = ".damaged.json"              # in an extracted folder: [{"file": member, "reason": ...}] it could not read


def local_source(source_cfg) -> Path | None:
    """data.source.path, checked to exist; None when it is not set (the photos are downloaded). The one
    check of the key: config validation and the split stage both call it."""
    if not source_cfg.path:
        return None
    path = Path(str(source_cfg.path)).expanduser()
    if not path.exists():
        raise ConfigError(f"data.source.path: {path} does not exist")
    return path


def resolve_source(source_cfg, workdir: Path = Path(".")) -> Path:
    """Return a folder holding the raw images, extracting or downloading as the config says."""
    path = local_source(source_cfg)
    if path is not None:
        if path.is_dir():
            return path
        if zipfile.is_zipfile(path):
            return extract_zip(path, workdir / source_cfg.download_dir / (path.stem + "_extracted"))
        raise DataError(f"data.source.path: {path} is neither a folder nor a .zip archive")
    archive = download(source_cfg.url, workdir / source_cfg.download_dir, source_cfg.sha256)
    return extract_zip(archive, archive.parent / (archive.stem + "_extracted"))


def _safe_member_path(name: str) -> PurePosixPath:
    """Reject absolute paths, drive letters and `..` components in an archive member name."""
    normalized = name.replace("\\", "/")
    member = PurePosixPath(normalized)
    if normalized.startswith("/") or member.is_absolute() or (len(normalized) > 1 and normalized[1] == ":"):
        raise DataError(f"refusing archive member with an absolute path: {name!r}")
    if any(part == ".." for part in member.parts):
        raise DataError(f"refusing archive member that escapes the target folder: {name!r}")
    return member


def _archive_identity(archive: Path) -> str:
    """What the `.complete` marker records: the archive's path, size and modification time, so that another
    archive copied over the same path is extracted again instead of its predecessor's photos being reused."""
    stat = archive.stat()
    return json.dumps({"archive": str(archive), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}) + "\n"


def extract_zip(archive: Path, target: Path) -> Path:
    """Extract `archive` into `target` (once: a `.complete` marker records which archive was extracted).

    `target` is a cache shared by every job run from one folder (data/raw), so two jobs of a sweep may
    ask at once: a lock beside it makes the second wait and then find the first one's photos, instead of
    replacing the folder under it."""
    marker = target / ".complete"
    if marker.exists() and marker.read_text() == _archive_identity(archive):
        return target
    with _open_zip(archive) as zf:              # a hostile archive is refused before anything, even the lock,
        _check_members(zf, archive)             # is written
    with file_lock(target.with_name(target.name + ".lock")):
        if marker.exists() and marker.read_text() == _archive_identity(archive):
            return target
        return _extract(archive, target, marker)


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc})") from None


def _check_members(zf: zipfile.ZipFile, archive: Path) -> None:
    """Refuse the whole archive for an unsafe path, a symbolic link or an absurd size, reading only its
    directory."""
    total = 0
    for info in zf.infolist():
        _safe_member_path(info.filename)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise DataError(f"refusing symbolic link in archive: {info.filename!r}")
        if info.file_size > MAX_MEMBER_BYTES:
            raise DataError(f"refusing oversized archive member {info.filename!r} ({info.file_size} bytes)")
        total += info.file_size
    if total > MAX_ARCHIVE_BYTES:
        raise DataError(f"{archive}: unpacks to {total} bytes, more than the {MAX_ARCHIVE_BYTES} allowed")


def _extract(archive: Path, target: Path, marker: Path) -> Path:
    with _open_zip(archive) as zf:
        _check_members(zf, archive)             # the directory it extracts: the file may have been replaced
        infos = zf.infolist()
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        damaged = []
        for info in progress(infos, desc=f"extract {archive.name}", unit="file"):
            if info.is_dir():
                continue
            dest = partial.joinpath(*_safe_member_path(info.filename).parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
            # the archive's own damage to one member (CRC, stream, a size its header lies about, encryption,
            # an unknown compression): that photo is skipped and listed, like an unreadable one in a folder
            except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
                dest.unlink(missing_ok=True)
                damaged.append({"file": info.filename, "reason": f"damaged in the archive: {exc}"})
        if damaged:
            (partial / DAMAGED).write_text(json.dumps(damaged, indent=1) + "\n")
            print(f"[split] {archive.name}: {len(damaged)} damaged member(s) skipped (listed in the split report)")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    marker.write_text(_archive_identity(archive))
    return target


def damaged_members(root: Path) -> list[dict]:
    """The members `extract_zip` could not read from the archive extracted at `root` ([] for a folder)."""
    listed = root / DAMAGED
    return json.loads(listed.read_text()) if listed.is_file() else []


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest_dir: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download `url` into `dest_dir`, resuming a `.part` file, and verify `sha256` if given."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.request.urlparse(url).path).name or "download.zip"
    final = dest_dir / name
    # one download at a time into a `.part` (two jobs of a sweep appending to one file would corrupt it):
    # the second waits, then finds the finished file
    with file_lock(final.with_name(final.name + ".lock")):
        if final.exists():
            _verify(final, sha256)
            return final
        return _download(url, final, sha256, timeout)


def _download(url: str, final: Path, sha256: str | None, timeout: float) -> Path:
    name = final.name
    part = final.with_name(final.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            # 416: nothing lies past the .part's end, i.e. a run was stopped after the last byte (while
            # verifying, say): the .part is whole, and the checksum below says whether it is right
            if not (offset and exc.code == 416):
                raise
            response = None
        if response is not None:
            _receive(response, part, offset, name)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(
            f"could not download {url} ({getattr(exc, 'reason', exc)}); offline? download it elsewhere "
            f"and set data.source.path to the folder or .zip (e.g. dvc exp run -S data.source.path=/path/to/train.zip)"
        ) from None
    _verify(part, sha256)
    os.replace(part, final)
    return final


def _receive(response, part: Path, offset: int, name: str) -> None:
    """Append the response to `part` (from `offset`, or from the start where the server ignored Range)."""
    with response:
        if offset and response.status != 206:    # server ignored Range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with open(part, "ab" if offset else "wb") as out, progress(
            total=total, initial=offset, unit="B", unit_scale=True, desc=f"download {name}"
        ) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def _verify(path: Path, sha256: str | None) -> None:
    digest = sha256_file(path)
    if sha256 and digest != sha256.lower():
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        raise DataError(f"{path.name}: sha256 {digest} does not match data.source.sha256 {sha256}; moved to {bad}")
    if not sha256:
        print(f"[catdog] {path.name} sha256 {digest} (set data.source.sha256 to pin it)")
