"""Folder artifacts (an MLflow model folder) as one SHA-256 and one archive the database can hold.

The digest of a folder is the SHA-256 of its manifest: one line per regular file, sorted by
relative path, `<sha256 of the file>  <relative/path>\\n` — what `sha256sum` prints. It depends
only on the paths and contents, never on timestamps, permissions or how the archive was made:

    cd FOLDER && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum

The archive is a zip with the same files in the same order and fixed timestamps.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


class FolderError(ValueError):
    """A folder that cannot be an artifact, or an archive that is not one of ours."""


def folder_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """The digest of (relative path, content) pairs, given in any order."""
    manifest = "".join(
        f"{hashlib.sha256(content).hexdigest()}  {name}\n" for name, content in sorted(files)
    )
    return hashlib.sha256(manifest.encode()).hexdigest()


def list_files(folder: Path, limit: int) -> list[tuple[str, Path]]:
    """Every regular file under `folder` as (relative POSIX path, path), sorted by that name."""
    found = []
    total = 0
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in [*names, *(d for d in dirs if Path(root, d).is_symlink())]:
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink() or not path.is_file():
                raise FolderError(
                    f"{folder} contains {relative}, which is not a regular file; "
                    "copy what it points to into the folder"
                )
            if "\n" in relative or "\\" in relative:
                raise FolderError(f"{folder} contains a file name with a newline or backslash")
            total += path.stat().st_size
            if total > limit:
                raise FolderError(f"{folder} is larger than {limit // 2**20} MiB")
            found.append((relative, path))
    if not found:
        raise FolderError(f"{folder} has no files")
    return sorted(found)


def pack_folder(folder: Path, limit: int) -> tuple[str, bytes]:
    """The folder's digest and its archive."""
    files = [(name, path.read_bytes()) for name, path in list_files(folder, limit)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files:
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, content)
    return folder_digest(files), buffer.getvalue()


def archive_digest(archive: bytes) -> str:
    return folder_digest(_entries(archive))


def unpack_folder(archive: bytes, destination: Path) -> None:
    for name, content in _entries(archive):
        path = destination.joinpath(*PurePosixPath(name).parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def digest_of(folder: Path, limit: int) -> str:
    return folder_digest((name, path.read_bytes()) for name, path in list_files(folder, limit))


def _entries(archive: bytes) -> Iterator[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as opened:
            for entry in opened.infolist():
                if entry.is_dir():
                    continue
                parts = PurePosixPath(entry.filename).parts
                if not parts or entry.filename.startswith("/") or ".." in parts:
                    raise FolderError(f"the archive holds an unsafe path {entry.filename!r}")
                yield entry.filename, opened.read(entry)
    except zipfile.BadZipFile as exc:
        raise FolderError(f"the stored artifact is not a folder archive ({exc})") from None
