"""Validate and read model artifacts: Triton model folders packed as zip or tar.

CI pipelines upload a model folder packed as ``.zip``, ``.tar.gz`` or ``.tar``.
Uploads are hostile input, so :func:`inspect_archive` reads the archive
through once, without extracting anything to disk and with bounded memory,
and rejects anything that could escape the target folder, exhaust resources
or is simply broken. :func:`iter_files` later streams the accepted files out
for deployment, one member at a time.

Layout of the model folder inside the archive (after an optional single
wrapping folder whose name is not all digits, which is stripped)::

    config.pbtxt        optional, kept as text (at most 1 MiB, UTF-8)
    labels.txt          other root files are "model" files
    1/model.py          one version folder (all digits) holds the "version"
    1/sub/weights.bin   files; nested folders are allowed inside it

Files in other (non-digit) folders beside the version folder are model files
too, e.g. ``extras/vocab.txt``. Without a version folder, every file except
``config.pbtxt`` is a version file. Two or more version folders are an error.

This module is pure standard library; it does not import Django.
"""

from __future__ import annotations

import gzip
import os
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = [
    "ArchiveError",
    "ArchiveLimits",
    "ModelFolder",
    "SourceError",
    "detect_format",
    "inspect_archive",
    "iter_files",
    "iter_member_streams",
    "list_archive",
]

CONFIG_NAME = "config.pbtxt"
MAX_CONFIG_SIZE = 1024 * 1024
CHUNK_SIZE = 1024 * 1024
MAX_PATH_BYTES = 4096  # PATH_MAX
MAX_NAME_BYTES = 255  # NAME_MAX, per path component

# Tar metadata headers (pax, GNU long names) are read into memory by tarfile.
_TAR_META_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)
_MAX_TAR_META_HEADER = 64 * 1024  # one metadata header
_MAX_TAR_META_TOTAL = 16 * 1024 * 1024  # all metadata headers of an archive
_MAX_TAR_META_CHAIN = 16  # metadata headers in a row before a member
_MAX_TAR_TRAILER = 16 * 1024 * 1024  # zero padding after the end marker

_ZIP_ENCRYPTED = 0x1 | 0x40  # traditional and strong encryption flag bits
_ZIP_UTF8_NAME = 0x800
_ZIP_COMPRESSIONS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_ZIP_CENTRAL_HEADER = struct.Struct("<4s24xHHH12x")  # 46 bytes
_ZIP_CENTRAL_MAGIC = b"PK\x01\x02"
# zipfile has no public reader for the end-of-central-directory record; its
# private helper returns a list indexed as below (stable since Python 2).
_zip_end_record: Callable[[IO[bytes]], list[Any] | None] = zipfile._EndRecData  # type: ignore[attr-defined]
_ECD_SIGNATURE, _ECD_ENTRIES_TOTAL, _ECD_SIZE, _ECD_LOCATION = 0, 4, 5, 9
_ZIP64_END_MAGIC = b"PK\x06\x06"
_ZIP64_END_SIZES = 56 + 20  # zip64 end record + zip64 end locator

_SPECIAL_FILE_TYPES = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
}


class ArchiveError(ValueError):
    """An uploaded archive is unusable.

    ``message`` names the problem (and the rule it breaks); ``member`` is the
    offending member's name as stored in the archive, or ``None`` when the
    problem concerns the archive as a whole. ``str(error)`` shows both.
    """

    def __init__(self, message: str, member: str | None = None):
        super().__init__(message, member)
        self.message = message
        self.member = member

    def __str__(self) -> str:
        if self.member is None:
            return self.message
        shown = self.member if self.member.isprintable() else repr(self.member)
        return f"{self.message}: {shown}"


@dataclass(frozen=True)
class ArchiveLimits:
    """Resource caps; sizes are unpacked bytes, counted while reading the data.

    ``max_ratio`` caps unpacked bytes per packed byte of the archive file: model
    weights barely compress (about 1.1:1), a zip bomb does 1000:1. Archives that
    unpack to at most ``ratio_floor`` bytes are never refused for their ratio,
    so a small, very compressible folder (text, sparse weights) still passes.
    """

    max_entries: int = 10_000
    max_total_size: int = 8 * 1024**3
    max_member_size: int = 4 * 1024**3
    max_ratio: float = 100.0
    ratio_floor: int = 64 * 1024**2


@dataclass(frozen=True)
class ModelFolder:
    """What :func:`inspect_archive` found in an archive."""

    format: str  # "zip" | "tar" | "tar.gz"
    version_files: dict[str, int]  # path inside the version folder -> size
    # files outside the version folder other than config.pbtxt -> size (root
    # files such as labels.txt, or e.g. extras/vocab.txt beside the version)
    model_files: dict[str, int]
    config_pbtxt: str | None
    total_size: int  # unpacked bytes of all files, config.pbtxt included
    # archive member name -> (kind, relpath); used by iter_files
    _members: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False, compare=False)


# --------------------------------------------------------------------------
# Public API


def detect_format(path: str | os.PathLike[str]) -> str:
    """Return ``"zip"``, ``"tar.gz"`` or ``"tar"`` from the file's magic bytes."""
    with _errors(), open(path, "rb") as f:
        return _detect(f)


def inspect_archive(path: str | os.PathLike[str], limits: ArchiveLimits = ArchiveLimits()) -> ModelFolder:
    """Validate the archive at ``path`` and describe the model folder in it.

    The whole archive is read through once (so truncation and checksum
    errors surface) without writing anything to disk. Raises
    :class:`ArchiveError` for anything unsafe, oversized, corrupt or not
    laid out like a Triton model folder.
    """
    with _errors(), open(path, "rb") as f:
        scan = _Scan(limits, packed_size=os.fstat(f.fileno()).st_size)
        fmt = _detect(f)
        if fmt == "zip":
            _scan_zip(f, scan)
        else:
            _scan_tar(f, fmt, scan)
    return scan.model_folder(fmt)


def iter_files(path: str | os.PathLike[str], folder: ModelFolder) -> Iterator[tuple[str, str, bytes]]:
    """Yield ``(kind, relpath, data)`` for every file of ``folder``.

    ``kind`` is ``"version"`` or ``"model"``; ``relpath`` is the key of
    ``folder.version_files`` / ``folder.model_files``. ``config.pbtxt`` is not
    yielded (it is ``folder.config_pbtxt``). Members are read one at a time,
    in archive order. Raises :class:`ArchiveError` if the archive no longer
    matches ``folder``.
    """
    for name, kind, relpath, stream, size in _stored_members(path, folder, None):
        with _errors(name):
            data = _read_exactly(stream, size, name)
        yield kind, relpath, data


# --------------------------------------------------------------------------
# Streaming a stored archive's files (Triton loads): never a whole file in memory

# A stored archive: its path, or a function that opens it as a seekable binary
# stream (a file in object storage has no path).
Source = str | os.PathLike[str] | Callable[[], IO[bytes]]


class SourceError(OSError):
    """Reading a stored archive failed for a reason outside it (its storage is unreachable):
    raised as it is, never mistaken for a corrupt archive."""


def _open_source(source: Source) -> IO[bytes]:
    return source() if callable(source) else open(source, "rb")


def list_archive(path: Source, limits: ArchiveLimits = ArchiveLimits()) -> ModelFolder:
    """Describe an archive that :func:`inspect_archive` accepted before, from its listing.

    Sizes are the ones the archive declares (zip central directory, tar
    headers); member data is not read, so this is cheap for a zip (a tar is
    read through, as it has no directory). The names, layout and entry rules
    are those of :func:`inspect_archive`. :func:`iter_member_streams` checks
    the declared sizes while it streams the data.
    """
    with _errors(), _open_source(path) as f:
        scan = _Listing(limits, packed_size=f.seek(0, os.SEEK_END))
        f.seek(0)
        fmt = _detect(f)
        if fmt == "zip":
            _scan_zip(f, scan)
        else:
            _scan_tar(f, fmt, scan)
    return scan.model_folder(fmt)


def iter_member_streams(
    path: Source, folder: ModelFolder, wanted: Collection[tuple[str, str]] | None = None
) -> Iterator[tuple[str, str, IO[bytes]]]:
    """Yield ``(kind, relpath, stream)`` for the files of ``folder``, in archive order.

    ``wanted`` limits the files to those ``(kind, relpath)`` pairs (default: all).
    Each stream is the member itself (``ZipFile.open`` / ``TarFile.extractfile``),
    valid until the next item is asked for; it yields exactly the member's
    size from ``folder`` or raises :class:`ArchiveError` (as does a corrupt
    member, a checksum error, or a member that is missing). Close the
    generator (``contextlib.closing``) to release the archive file early.
    """
    for name, kind, relpath, stream, size in _stored_members(path, folder, wanted):
        yield kind, relpath, _SizedStream(stream, size, name)


def _stored_members(
    path: Source, folder: ModelFolder, wanted: Collection[tuple[str, str]] | None
) -> Iterator[tuple[str, str, str, IO[bytes], int]]:
    """``(member name, kind, relpath, raw stream, listed size)`` of ``folder``'s files
    (those in ``wanted``, default all), in archive order; a member that is gone, or
    an archive of another format, is an ArchiveError."""
    members = {name: entry for name, entry in folder._members.items() if wanted is None or entry in wanted}
    with _errors(), _open_source(path) as f:
        if _detect(f) != folder.format:
            raise ArchiveError("the archive changed since it was inspected")
        if folder.format == "zip":
            streams = _iter_zip_members(f, members)
        else:
            streams = _iter_tar_members(f, folder.format, members)
        with closing(streams):
            for name, stream in streams:
                kind, relpath = members.pop(name)
                yield (
                    name,
                    kind,
                    relpath,
                    stream,
                    (folder.version_files if kind == "version" else folder.model_files)[relpath],
                )
                if not members:
                    return
    if members:
        raise ArchiveError("the archive changed since it was inspected (member missing)", next(iter(members)))


_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes we do not need, name and extra lengths
_ZIP_ENCRYPTED = 0x1


def stored_zip_ranges(path: str | os.PathLike[str], folder: ModelFolder) -> dict[tuple[str, str], tuple[int, int]]:
    """Where the files a zip stores uncompressed lie in it: ``(kind, relpath) -> (offset, size)``.

    Such a member's bytes are the file's bytes, so a caller can copy them file to
    file (``os.copy_file_range``, in the kernel) instead of through ``zipfile``:
    for a large model that is most of the time a copy takes. Compressed and
    encrypted members are left out (read those with :func:`iter_member_streams`).
    The CRC is not checked on this path: the caller trusts the stored artifact,
    whose sha256 was taken when it was uploaded.
    """
    if folder.format != "zip":
        return {}
    result: dict[tuple[str, str], tuple[int, int]] = {}
    with _errors(), open(path, "rb") as f:
        length = os.fstat(f.fileno()).st_size
        with zipfile.ZipFile(f) as zf:
            for info in zf.infolist():
                name = _zip_name(info)
                entry = folder._members.get(name)
                if entry is None or info.compress_type != zipfile.ZIP_STORED or info.flag_bits & _ZIP_ENCRYPTED:
                    continue
                kind, relpath = entry
                size = (folder.version_files if kind == "version" else folder.model_files)[relpath]
                f.seek(info.header_offset)
                header = f.read(_ZIP_LOCAL_HEADER.size)
                if len(header) != _ZIP_LOCAL_HEADER.size:
                    raise ArchiveError("the archive changed since it was inspected (member header cut)", name)
                signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(header)
                offset = info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length
                if signature != b"PK\x03\x04" or info.file_size != size or offset + size > length:
                    raise ArchiveError("the archive changed since it was inspected", name)
                result[entry] = (offset, size)
    return result


class _SizedStream:
    """A member's stream that must yield exactly ``size`` bytes; errors become ArchiveErrors."""

    def __init__(self, stream: IO[bytes], size: int, member: str):
        self._stream, self._left, self._member = stream, size, member

    def read(self, n: int = -1) -> bytes:
        with _errors(self._member):
            if self._left == 0:
                extra = self._stream.read(1)  # also makes zipfile check the CRC at the end
                if extra:
                    raise ArchiveError("the archive changed since it was inspected (member is longer)", self._member)
                return b""
            data = self._stream.read(self._left if n is None or n < 0 else min(n, self._left))
            if not data:
                raise ArchiveError("the archive changed since it was inspected (member is shorter)", self._member)
            self._left -= len(data)
            return data


# --------------------------------------------------------------------------
# Format detection


def _detect(f: IO[bytes]) -> str:
    head = f.read(512)
    f.seek(0)
    if not head:
        raise ArchiveError("not a zip or tar archive (the file is empty)")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            block = gz.read(tarfile.BLOCKSIZE)
        f.seek(0)
        if _is_tar_header(block):
            return "tar.gz"
        raise ArchiveError("the file is gzip-compressed but does not hold a tar archive")
    if _is_tar_header(head):
        return "tar"
    if head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        raise ArchiveError("bzip2/xz-compressed archives are not supported: use .zip, .tar or .tar.gz")
    raise ArchiveError("not a zip or tar archive (unrecognised file signature)")


def _is_tar_header(block: bytes) -> bool:
    if len(block) != tarfile.BLOCKSIZE:
        return False
    if block.count(0) == tarfile.BLOCKSIZE:
        return True  # end-of-archive marker first: an empty tar
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------
# Error translation


@contextmanager
def _errors(member: str | None = None) -> Iterator[None]:
    """Turn any low-level exception into an ArchiveError."""
    try:
        yield
    except (ArchiveError, SourceError):
        raise
    except Exception as exc:
        raise _translate(exc, member) from exc


def _translate(exc: Exception, member: str | None) -> ArchiveError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError):
        message = "the archive is truncated (compressed data ends early)"
    elif isinstance(exc, zipfile.BadZipFile):
        message = f"the zip archive is corrupt or truncated ({detail})"
    elif isinstance(exc, gzip.BadGzipFile):
        message = f"the gzip stream is corrupt ({detail})"
    elif isinstance(exc, tarfile.TarError):
        message = f"the tar archive is corrupt or truncated ({detail})"
    elif isinstance(exc, zlib.error):
        message = f"the archive holds corrupt compressed data ({detail})"
    elif isinstance(exc, UnicodeError):
        message = "a member name is not valid UTF-8"
    elif isinstance(exc, NotImplementedError):
        message = f"the archive uses an unsupported feature ({detail})"
    elif isinstance(exc, RecursionError | MemoryError):
        message = "the archive is too complex to read"
    elif isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
        message = f"cannot open the archive file ({detail})"
    else:  # lzma.LZMAError, OSError from bz2, struct.error, ...
        message = f"the archive is corrupt ({type(exc).__name__}: {detail})"
    return ArchiveError(message, member)


# --------------------------------------------------------------------------
# Member names


def _normalise(name: str) -> str:
    """Return the member's path as clean posix relative path ("" for the root).

    Rejects names that are absolute, climb out with "..", or hold NUL,
    control characters or invalid UTF-8.
    """
    if "\x00" in name:
        raise ArchiveError("member name contains a NUL byte", name)
    if not (name.isascii() and name.isprintable()):
        for char in name:
            category = unicodedata.category(char)
            if category == "Cs":
                raise ArchiveError("member name is not valid UTF-8", name)
            if category in ("Cc", "Cf"):
                raise ArchiveError(f"member name contains control character U+{ord(char):04X}", name)
    path = name.replace("\\", "/")
    if path.startswith("/"):
        raise ArchiveError("absolute paths are not allowed", name)
    if len(path) >= 2 and path[1] == ":" and path[0].isascii() and path[0].isalpha():
        raise ArchiveError("absolute Windows paths (drive letters) are not allowed", name)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError("'..' path components are not allowed", name)
    normalised = "/".join(parts)
    if len(normalised.encode()) > MAX_PATH_BYTES:
        raise ArchiveError(f"member path is longer than {MAX_PATH_BYTES} bytes", name)
    if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
        raise ArchiveError(f"member path has a component longer than {MAX_NAME_BYTES} bytes", name)
    return normalised


def _is_version_name(name: str) -> bool:
    return name.isascii() and name.isdigit()


# --------------------------------------------------------------------------
# The single pass over an archive's members


class _Scan:
    """Collects files and folders while an archive is read through."""

    def __init__(self, limits: ArchiveLimits, packed_size: int = 0):
        self.limits = limits
        # Unpacked bytes allowed in all before the ratio cap refuses the archive.
        self.ratio_budget = max(limits.ratio_floor, int(limits.max_ratio * packed_size))
        self.packed_size = packed_size
        self.entries = 0
        self.total = 0
        self.files: dict[str, tuple[str, int]] = {}  # path -> (member, size)
        self.dirs: set[str] = set()
        self.tops: set[str] = set()  # first path components, at most two kept
        # config.pbtxt at the root or under a possible wrapping folder:
        # path -> (member, text bytes, or None when larger than the cap)
        self.configs: dict[str, tuple[str, bytes | None]] = {}

    def count(self, member: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveError(
                f"the archive holds more than {self.limits.max_entries} entries (max_entries)",
                member,
            )

    def add_dir(self, member: str, path: str) -> None:
        if not path:
            return  # "./" or "/": the root itself
        if path in self.files:
            raise ArchiveError("path is used both as a file and as a folder", member)
        self.dirs.add(path)
        self._note_top(path)

    def add_file(self, member: str, path: str, declared_size: int, stream: IO[bytes]) -> None:
        if not path:
            raise ArchiveError("file member has an empty path", member)
        if path in self.files:
            raise ArchiveError("duplicate member path", member)
        if path in self.dirs:
            raise ArchiveError("path is used both as a file and as a folder", member)
        if declared_size > self.limits.max_member_size:
            raise self._member_too_big(member)
        if self.total + declared_size > self.ratio_budget:  # refused before inflating it
            raise self._ratio_exceeded(member, self.total + declared_size)
        self._note_top(path)
        keep = self._is_config_candidate(path)
        size, data = self._read(member, stream, keep)
        self.files[path] = (member, size)
        if keep:
            self.configs[path] = (member, data)

    def _note_top(self, path: str) -> None:
        if len(self.tops) < 2:
            self.tops.add(path.partition("/")[0])
            if len(self.tops) == 2:  # no wrapping folder: only root config counts
                self.configs = {p: v for p, v in self.configs.items() if p == CONFIG_NAME}

    def _is_config_candidate(self, path: str) -> bool:
        if path == CONFIG_NAME:
            return True
        top, _, rest = path.partition("/")
        return rest == CONFIG_NAME and len(self.tops) == 1 and not _is_version_name(top)

    def _ratio_exceeded(self, member: str, unpacked: int) -> ArchiveError:
        return ArchiveError(
            f"the archive unpacks to at least {unpacked} bytes from {self.packed_size} packed bytes, "
            f"over {self.limits.max_ratio:g} times its packed size (max_ratio; archives that unpack to at most "
            f"{self.limits.ratio_floor} bytes are exempt)",
            member,
        )

    def _member_too_big(self, member: str) -> ArchiveError:
        return ArchiveError(
            f"member unpacks to more than {self.limits.max_member_size} bytes (max_member_size)",
            member,
        )

    def _read(self, member: str, stream: IO[bytes], keep: bool) -> tuple[int, bytes | None]:
        """Read the member through; return its size and, if kept, its data.

        Kept data is None when it is larger than MAX_CONFIG_SIZE.
        """
        size = 0
        kept: bytearray | None = bytearray() if keep else None
        while chunk := stream.read(CHUNK_SIZE):
            size += len(chunk)
            self.total += len(chunk)
            if size > self.limits.max_member_size:
                raise self._member_too_big(member)
            if self.total > self.limits.max_total_size:
                raise ArchiveError(
                    f"the archive unpacks to more than {self.limits.max_total_size} bytes (max_total_size)",
                    member,
                )
            if self.total > self.ratio_budget:  # the declared size lied
                raise self._ratio_exceeded(member, self.total)
            if kept is not None:
                kept += chunk
                if len(kept) > MAX_CONFIG_SIZE:
                    kept = None  # too large; keep reading to check the data
        return size, None if kept is None else bytes(kept)

    def model_folder(self, fmt: str) -> ModelFolder:
        if not self.files:
            raise ArchiveError("the archive holds no files")
        self._check_files_under_files()

        prefix = ""
        if len(self.tops) == 1:
            (top,) = self.tops
            if not _is_version_name(top) and top not in self.files:
                prefix = top + "/"  # a wrapping folder
        files = {path[len(prefix) :]: entry for path, entry in self.files.items()}
        dirs = [d[len(prefix) :] for d in self.dirs if d.startswith(prefix)]

        versions = {p.partition("/")[0] for p in files if "/" in p}
        versions.update(d.partition("/")[0] for d in dirs)
        versions = sorted((v for v in versions if _is_version_name(v)), key=int)
        if len(versions) > 1:
            shown = ", ".join(versions[:10]) + (", ..." if len(versions) > 10 else "")
            raise ArchiveError(f"the archive holds version folders {shown}: upload one version per artifact")

        version_files: dict[str, int] = {}
        model_files: dict[str, int] = {}
        members: dict[str, tuple[str, str]] = {}
        version_prefix = versions[0] + "/" if versions else ""
        for path, (member, size) in files.items():
            if path == CONFIG_NAME:
                continue
            if path.startswith(version_prefix):
                relpath = path[len(version_prefix) :]
                version_files[relpath] = size
                members[member] = ("version", relpath)
            else:
                model_files[path] = size
                members[member] = ("model", path)
        if not version_files:
            if versions:
                raise ArchiveError(f"version folder {versions[0]} holds no files")
            raise ArchiveError("the archive holds no model files besides config.pbtxt")

        return ModelFolder(
            format=fmt,
            version_files=version_files,
            model_files=model_files,
            config_pbtxt=self._config_text(prefix) if CONFIG_NAME in files else None,
            total_size=self.total,
            _members=members,
        )

    def _check_files_under_files(self) -> None:
        for path in self.files:
            parent = path
            while "/" in parent:
                parent = parent.rpartition("/")[0]
                if parent in self.files:
                    raise ArchiveError(
                        "path is used both as a file and as a folder",
                        self.files[parent][0],
                    )

    def _config_text(self, prefix: str) -> str:
        member, data = self.configs[prefix + CONFIG_NAME]
        if data is None:
            raise ArchiveError(f"{CONFIG_NAME} is larger than 1 MiB", member)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError(f"{CONFIG_NAME} is not valid UTF-8 text", member) from None


def _read_exactly(stream: IO[bytes], size: int, member: str) -> bytes:
    chunks = []
    got = 0
    while chunk := stream.read(min(CHUNK_SIZE, size - got + 1)):
        got += len(chunk)
        if got > size:
            break
        chunks.append(chunk)
    if got != size:
        raise ArchiveError("the archive changed since it was inspected (size differs)", member)
    return b"".join(chunks)


class _Listing(_Scan):
    """A _Scan that trusts the sizes the archive declares instead of reading the data."""

    def add_file(self, member: str, path: str, declared_size: int, stream: IO[bytes]) -> None:
        super().add_file(member, path, declared_size, _Declared(declared_size))

    def _read(self, member: str, stream: IO[bytes], keep: bool) -> tuple[int, bytes | None]:
        assert isinstance(stream, _Declared)
        return stream.size, b"" if keep else None  # config.pbtxt's text is not needed for a listing


@dataclass(frozen=True)
class _Declared:
    size: int


# --------------------------------------------------------------------------
# zip


def _scan_zip(f: IO[bytes], scan: _Scan) -> None:
    _check_zip_directory(f, scan.limits.max_entries)
    with zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            name = _zip_name(info)
            scan.count(name)
            path = _normalise(name)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise ArchiveError("symbolic links are not allowed", name)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveError(_special_file_message(kind), name)
            if name.replace("\\", "/").endswith("/") or kind == stat.S_IFDIR:
                if info.file_size:
                    raise ArchiveError("folder entry holds data", name)
                scan.add_dir(name, path)
                continue
            _check_zip_member(info, name)
            with _errors(name), zf.open(info) as stream:
                scan.add_file(name, path, info.file_size, stream)


def _zip_name(info: zipfile.ZipInfo) -> str:
    """The member name; names without the UTF-8 flag must be UTF-8 too."""
    name = info.orig_filename  # not cut at a NUL byte, unlike info.filename
    if not info.flag_bits & _ZIP_UTF8_NAME:
        try:
            name = name.encode("cp437").decode("utf-8")
        except UnicodeError:
            raise ArchiveError("member name is not valid UTF-8", name) from None
    return name


def _check_zip_member(info: zipfile.ZipInfo, name: str) -> None:
    if info.flag_bits & _ZIP_ENCRYPTED:
        raise ArchiveError("encrypted members are not supported", name)
    if info.compress_type not in _ZIP_COMPRESSIONS:
        raise ArchiveError(f"unsupported zip compression method {info.compress_type}", name)


def _check_zip_directory(f: IO[bytes], max_entries: int) -> None:
    """Count central directory entries before zipfile loads them all.

    zipfile.ZipFile builds a ZipInfo for every entry up front, so a zip with
    a million entries would be materialised before any check could run.
    """
    endrec = _zip_end_record(f)
    if not endrec:
        raise ArchiveError("the zip archive is truncated or corrupt (no end of central directory)")
    too_many = ArchiveError(f"the archive holds more than {max_entries} entries (max_entries)")
    if endrec[_ECD_ENTRIES_TOTAL] > max_entries:
        raise too_many
    size_cd = endrec[_ECD_SIZE]
    start = endrec[_ECD_LOCATION] - size_cd  # as zipfile computes it
    if endrec[_ECD_SIGNATURE] == _ZIP64_END_MAGIC:
        start -= _ZIP64_END_SIZES
    if start < 0:
        raise ArchiveError("the zip archive is corrupt (bad central directory offset)")
    f.seek(start)
    entries = consumed = 0
    while consumed < size_cd:
        header = f.read(_ZIP_CENTRAL_HEADER.size)
        if len(header) != _ZIP_CENTRAL_HEADER.size:
            break  # zipfile reports the damage
        magic, name_len, extra_len, comment_len = _ZIP_CENTRAL_HEADER.unpack(header)
        if magic != _ZIP_CENTRAL_MAGIC:
            break
        entries += 1
        if entries > max_entries:
            raise too_many
        f.seek(name_len + extra_len + comment_len, os.SEEK_CUR)
        consumed += _ZIP_CENTRAL_HEADER.size + name_len + extra_len + comment_len
    f.seek(0)


def _iter_zip_members(f: IO[bytes], wanted: dict[str, tuple[str, str]]) -> Iterator[tuple[str, IO[bytes]]]:
    with zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            name = _zip_name(info)
            if name in wanted:
                _check_zip_member(info, name)
                with _errors(name), zf.open(info) as stream:
                    yield name, stream


# --------------------------------------------------------------------------
# tar


def _scan_tar(f: IO[bytes], fmt: str, scan: _Scan) -> None:
    with _open_tar(f, fmt) as tf:
        while (info := tf.next()) is not None:
            name = info.name
            scan.count(name)
            path = _normalise(name)
            if info.isdir():
                scan.add_dir(name, path)
                continue
            _check_tar_member(info)
            stream = tf.extractfile(info)
            assert stream is not None  # a regular file
            with _errors(name):
                scan.add_file(name, path, info.size, stream)
        _check_tar_trailer(tf)


def _check_tar_member(info: tarfile.TarInfo) -> None:
    if info.islnk():
        raise ArchiveError("hard links are not allowed", info.name)
    if info.issym():
        raise ArchiveError("symbolic links are not allowed", info.name)
    if info.ischr():
        raise ArchiveError(_special_file_message(stat.S_IFCHR), info.name)
    if info.isblk():
        raise ArchiveError(_special_file_message(stat.S_IFBLK), info.name)
    if info.isfifo():
        raise ArchiveError(_special_file_message(stat.S_IFIFO), info.name)
    if info.issparse():
        raise ArchiveError("sparse files are not supported", info.name)
    if not info.isreg():
        raise ArchiveError(
            f"tar member type {info.type!r} is not allowed: only regular files and folders",
            info.name,
        )


def _check_tar_trailer(tf: tarfile.TarFile) -> None:
    """Read past the end marker: catches gzip CRC errors and hidden data."""
    assert tf.fileobj is not None
    padding = 0
    while chunk := tf.fileobj.read(CHUNK_SIZE):
        padding += len(chunk)
        if chunk.count(0) != len(chunk):
            raise ArchiveError("the tar archive holds data after its end-of-archive marker")
        if padding > _MAX_TAR_TRAILER:
            raise ArchiveError("the tar archive has more than 16 MiB of padding after its end-of-archive marker")


@contextmanager
def _open_tar(f: IO[bytes], fmt: str) -> Iterator[tarfile.TarFile]:
    with ExitStack() as stack:
        stream: IO[bytes] = f
        if fmt == "tar.gz":
            # GzipFile (unlike tarfile's own gzip reader) checks the CRC and
            # raises EOFError on a truncated stream.
            stream = stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb"))
        yield stack.enter_context(
            tarfile.open(
                fileobj=stream,
                mode="r|",
                bufsize=CHUNK_SIZE,
                tarinfo=_strict_tarinfo_class(),
                encoding="utf-8",
                errors="surrogateescape",
            )
        )


def _strict_tarinfo_class() -> type[tarfile.TarInfo]:
    """A TarInfo that makes tarfile strict about hostile headers.

    Plain tarfile silently stops at a corrupt or truncated header, reads any
    pax/long-name header into memory whatever its size, and builds unbounded
    sparse maps. One class per archive, as it keeps a metadata budget.
    """
    budget = {"bytes": 0, "chain": 0}

    class StrictTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
            if len(buf) != tarfile.BLOCKSIZE:
                raise ArchiveError("the tar archive is truncated (it ends without an end-of-archive marker)")
            try:
                info = super().frombuf(buf, encoding, errors)
            except tarfile.EOFHeaderError:
                raise  # a zero block: the regular end of the archive
            except tarfile.HeaderError as exc:
                raise ArchiveError(f"the tar archive holds a corrupt header ({exc})") from None
            if info.type in _TAR_META_TYPES:
                budget["chain"] += 1
                budget["bytes"] += tarfile.BLOCKSIZE + info.size
                if info.size > _MAX_TAR_META_HEADER:
                    raise ArchiveError("the tar archive holds a metadata (pax or long name) header larger than 64 KiB")
                if budget["chain"] > _MAX_TAR_META_CHAIN:
                    raise ArchiveError("the tar archive holds too many metadata headers in a row")
                if budget["bytes"] > _MAX_TAR_META_TOTAL:
                    raise ArchiveError("the tar archive holds more than 16 MiB of metadata headers")
            else:
                budget["chain"] = 0
            if info.type == tarfile.GNUTYPE_SPARSE:
                raise ArchiveError("sparse files are not supported", info.name)
            return info

        # pax-style GNU sparse files: refuse before tarfile parses the map
        def _proc_gnusparse_00(self, member: tarfile.TarInfo, *args: object) -> None:
            raise ArchiveError("sparse files are not supported", member.name)

        _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00

    return StrictTarInfo


def _iter_tar_members(f: IO[bytes], fmt: str, wanted: dict[str, tuple[str, str]]) -> Iterator[tuple[str, IO[bytes]]]:
    with _open_tar(f, fmt) as tf:
        while (info := tf.next()) is not None:
            if info.name in wanted:
                _check_tar_member(info)
                stream = tf.extractfile(info)
                assert stream is not None
                yield info.name, stream


def _special_file_message(kind: int) -> str:
    what = _SPECIAL_FILE_TYPES.get(kind, f"file type 0o{kind:o}")
    return f"{what} members are not allowed: only regular files and folders"
