"""Archives a hub serves, read without trusting them: every member is checked before any is used.

An archive comes from a server we do not control. Unpacked blindly it can write outside its
folder (an absolute name, ``..``, a link), create device files, or fill the disk (a zip bomb).
Here the whole archive is refused when any one member is unsafe, before a byte of it is written,
and the member count and the declared sizes are capped; a member that then yields more bytes
than it declared is refused too.

Links of any kind are refused, even those that stay inside: the store holds regular files only,
each a hard link to a blob, and a link in a model folder would point past that bookkeeping.

Zip (what Geti and most hubs serve) and tar (plain or compressed) are read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from model_download.errors import IntegrityError

logger = logging.getLogger(__name__)

_PIECE = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
# What a reader's trouble looks like when the archive itself is damaged.
_CORRUPT = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, zlib.error, EOFError)
_KINDS = {
    "link": "a link",
    "special": "a device, pipe or socket",
    "encrypted": "an encrypted member",
}


class UnsafeArchiveError(IntegrityError):
    """An archive member could escape its folder, is not a plain file, or the archive is too big.

    The archive is refused whole: nothing of it is written.
    """


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps against archives that would exhaust the disk (zip bombs) or the inode table."""

    max_members: int = 10_000
    max_total_size: int = 64 << 30


#: The caps used when a caller gives none.
DEFAULT_LIMITS = ArchiveLimits()


@dataclass(frozen=True)
class ArchiveMember:
    """A regular file in an archive, by its normalised relative path."""

    path: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class _Entry:
    name: str  # as the archive spells it, to open it by
    path: str  # normalised: relative, '/'-separated, no '.' parts
    size: int


class _Reader(Protocol):
    def entries(self) -> Iterator[tuple[str, str, int]]: ...
    def open(self, name: str) -> IO[bytes]: ...


class _ZipReader:
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self._zip = archive

    def entries(self) -> Iterator[tuple[str, str, int]]:
        for info in self._zip.infolist():
            yield info.filename, _zip_kind(info), info.file_size

    def open(self, name: str) -> IO[bytes]:
        return self._zip.open(name)


class _TarReader:
    def __init__(self, archive: tarfile.TarFile) -> None:
        self._tar = archive

    def entries(self) -> Iterator[tuple[str, str, int]]:
        for info in self._tar.getmembers():
            yield info.name, _tar_kind(info), info.size

    def open(self, name: str) -> IO[bytes]:
        handle = self._tar.extractfile(self._tar.getmember(name))
        assert handle is not None  # only regular files are opened
        return handle


def _zip_kind(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & 0x1:
        return "encrypted"
    mode = info.external_attr >> 16
    # Only archives made on Unix carry a file type in the high bits; others hold files and dirs.
    if info.create_system == 3 and stat.S_IFMT(mode):
        if stat.S_ISLNK(mode):
            return "link"
        if stat.S_ISDIR(mode):
            return "dir"
        if not stat.S_ISREG(mode):
            return "special"
    return "dir" if info.is_dir() else "file"


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    return "link" if info.issym() or info.islnk() else "special"


@contextlib.contextmanager
def _open(archive: Path) -> Iterator[_Reader]:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as opened:
                yield _ZipReader(opened)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as opened:
                yield _TarReader(opened)
        else:
            raise IntegrityError(f"{archive.name} is neither a zip nor a tar archive.")
    except _CORRUPT as exc:
        raise IntegrityError(f"{archive.name} is a damaged archive ({exc}).") from exc


def _refuse(label: str, name: str, why: str) -> UnsafeArchiveError:
    shown = name if len(name) <= 200 else name[:200] + "..."
    return UnsafeArchiveError(
        f"{label} was refused: member {shown!r} {why}; nothing of it was written. The archive "
        "is malformed or hostile: tell whoever publishes it."
    )


def _safe_path(label: str, name: str, *, is_dir: bool) -> str:
    """``name`` as a relative path that stays inside the target, or the reason it cannot."""
    if any(ord(char) < 32 for char in name):
        raise _refuse(label, name, "has control characters in its name")
    if "\\" in name:
        raise _refuse(label, name, "has a backslash in its name (ambiguous as a separator)")
    if name.startswith("/") or _DRIVE.match(name):
        raise _refuse(label, name, "is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refuse(label, name, "climbs out of the target folder with '..'")
    if not parts and not is_dir:
        raise _refuse(label, name, "has an empty name")
    return "/".join(parts)


def _checked(reader: _Reader, label: str, limits: ArchiveLimits) -> dict[str, _Entry]:
    """Every regular file of the archive by path, once all members passed every check."""
    files: dict[str, _Entry] = {}
    taken: set[str] = set()  # case-folded: two names one file on a case-insensitive disk
    folders: set[str] = set()
    total = 0
    for count, (name, kind, size) in enumerate(reader.entries(), start=1):
        if count > limits.max_members:
            raise _refuse(label, name, f"is past the cap of {limits.max_members} members")
        path = _safe_path(label, name, is_dir=kind == "dir")
        if kind == "dir":
            folders.add(path.casefold())
            continue
        if kind != "file":
            raise _refuse(label, name, f"is {_KINDS[kind]}, not a regular file")
        if path.casefold() in taken:
            raise _refuse(label, name, "appears twice")
        taken.add(path.casefold())
        total += size
        if size < 0 or total > limits.max_total_size:
            raise _refuse(label, name, f"takes the total past {limits.max_total_size} bytes")
        files[path] = _Entry(name=name, path=path, size=size)
    for path in files:
        parts = path.casefold().split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    if clash := sorted(p for p in files if p.casefold() in folders):
        raise _refuse(label, files[clash[0]].name, "is both a file and a folder")
    return files


def _copy(
    reader: _Reader,
    entry: _Entry,
    label: str,
    out: BinaryIO | None,
    on_bytes: Callable[[int], None] | None,
) -> str:
    """Stream one member to ``out`` (or nowhere), checking its size; return its sha256."""
    digest, count = hashlib.sha256(), 0
    try:
        with reader.open(entry.name) as source:
            while piece := source.read(_PIECE):
                count += len(piece)
                if count > entry.size:
                    raise _refuse(
                        label, entry.name, f"holds more than the {entry.size} bytes it declares"
                    )
                digest.update(piece)
                if out is not None:
                    out.write(piece)
                if on_bytes is not None:
                    on_bytes(len(piece))
    except _CORRUPT as exc:
        raise IntegrityError(f"member {entry.path!r} of {label} is damaged ({exc}).") from exc
    if count != entry.size:
        raise IntegrityError(
            f"member {entry.path!r} of {label} ended at byte {count} of {entry.size}."
        )
    return digest.hexdigest()


def list_members(archive: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> list[ArchiveMember]:
    """The archive's regular files, sorted by path, once every member passed the checks.

    Raises:
        UnsafeArchiveError: a member is unsafe, or the archive is past ``limits``.
        IntegrityError: the file is not a readable zip or tar archive.
    """
    with _open(archive) as reader:
        files = _checked(reader, archive.name, limits)
    return [ArchiveMember(path=e.path, size=e.size) for e in sorted(files.values(), key=_by_path)]


def scan(archive: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> list[ArchiveMember]:
    """Like :func:`list_members`, and read every member through to give its sha256.

    Reading checks each member's size and checksum, so a damaged archive is caught here.
    """
    with _open(archive) as reader:
        files = sorted(_checked(reader, archive.name, limits).values(), key=_by_path)
        return [
            ArchiveMember(e.path, e.size, _copy(reader, e, archive.name, None, None)) for e in files
        ]


def extract_member(
    archive: Path,
    path: str,
    dest: Path,
    *,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    on_bytes: Callable[[int], None] | None = None,
    fsync: bool = False,
) -> str:
    """Write the member ``path`` to ``dest``, which appears whole or not at all; its sha256.

    The whole archive is checked first, as by :func:`list_members`.

    Raises:
        UnsafeArchiveError: some member of the archive is unsafe.
        IntegrityError: no such member, or it is damaged.
    """
    with _open(archive) as reader:
        entry = _checked(reader, archive.name, limits).get(path)
        if entry is None:
            raise IntegrityError(f"{archive.name} has no member {path!r}.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with open(part, "wb") as out:
                digest = _copy(reader, entry, archive.name, out, on_bytes)
                _flush(out, fsync)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
    return digest


def extract_all(
    archive: Path,
    target: Path,
    *,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    fsync: bool = False,
) -> list[ArchiveMember]:
    """Unpack every member into ``target``, a folder that must not exist yet: all or nothing.

    The members are written into a hidden sibling folder that is renamed to ``target`` once all
    of them are in, so a failure leaves no trace and nobody sees half an archive.

    Raises:
        FileExistsError: ``target`` exists.
        UnsafeArchiveError, IntegrityError: as for :func:`extract_member`; nothing is written.
    """
    if target.exists():
        raise FileExistsError(f"{target} exists: archives are unpacked into a new folder only.")
    work = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with _open(archive) as reader:
            files = sorted(_checked(reader, archive.name, limits).values(), key=_by_path)
            members = []
            for entry in files:
                dest = work / entry.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "xb") as out:
                    digest = _copy(reader, entry, archive.name, out, None)
                    _flush(out, fsync)
                members.append(ArchiveMember(entry.path, entry.size, digest))
        work.mkdir(parents=True, exist_ok=True)  # an archive with no files is an empty folder
        os.rename(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.debug("unpacked %d members of %s into %s", len(members), archive.name, target)
    return members


def _flush(out: BinaryIO, fsync: bool) -> None:
    if fsync:
        out.flush()
        os.fsync(out.fileno())


def _by_path(entry: _Entry) -> str:
    return entry.path
