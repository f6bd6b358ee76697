"""Specification of modelhub.lib.archives: validating uploaded model artifacts.

Every archive is built inside the test, under tmp_path.
"""

from __future__ import annotations

import bz2
import gzip
import io
import random
import stat
import struct
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelhub.lib.archives import (
    ArchiveError,
    ArchiveLimits,
    ModelFolder,
    detect_format,
    inspect_archive,
    iter_files,
    stored_zip_ranges,
)

FORMATS = ["zip", "tar.gz", "tar"]
MiB = 1024 * 1024

CONFIG = b'name: "mymodel"\nbackend: "python"\nmax_batch_size: 8\n'
LABELS = b"cat\ndog\n"
MODEL_PY = b"import triton_python_backend_utils as pb_utils\n"
WEIGHTS = bytes(range(256)) * 40


# --------------------------------------------------------------------------
# Building archives


@dataclass
class Entry:
    name: str
    data: bytes = b""
    kind: str = "file"  # file | dir | symlink | hardlink | fifo | chardev | blockdev
    target: str = ""  # link target


def file(name: str, data: bytes = b"data") -> Entry:
    return Entry(name, data)


def folder(name: str) -> Entry:
    return Entry(name if name.endswith("/") else name + "/", kind="dir")


def model_entries(wrapper: str = "") -> list[Entry]:
    """A typical Triton model folder, optionally inside a wrapping folder."""
    entries = [folder(wrapper)] if wrapper else []
    return entries + [
        file(wrapper + "config.pbtxt", CONFIG),
        file(wrapper + "labels.txt", LABELS),
        folder(wrapper + "1/"),
        file(wrapper + "1/model.py", MODEL_PY),
        file(wrapper + "1/sub/weights.bin", WEIGHTS),
    ]


_ZIP_MODES = {
    "file": stat.S_IFREG | 0o644,
    "dir": stat.S_IFDIR | 0o755,
    "symlink": stat.S_IFLNK | 0o777,
    "fifo": stat.S_IFIFO | 0o644,
    "chardev": stat.S_IFCHR | 0o644,
    "blockdev": stat.S_IFBLK | 0o644,
}
_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
}


def write_zip(path: Path, entries: list[Entry], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        for entry in entries:
            info = zipfile.ZipInfo()
            info.filename = entry.name  # set directly: ZipInfo() would cut at NUL
            info.external_attr = _ZIP_MODES[entry.kind] << 16
            info.compress_type = compression
            zf.writestr(info, entry.target.encode() if entry.target else entry.data)
    return path


def write_tar(path: Path, entries: list[Entry], gz: bool, fmt: int = tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w", format=fmt, errors="surrogateescape") as tf:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = _TAR_TYPES[entry.kind]
            info.linkname = entry.target
            if entry.kind == "file":
                info.size = len(entry.data)
                tf.addfile(info, io.BytesIO(entry.data))
            else:
                tf.addfile(info)
    return path


def build(tmp_path: Path, fmt: str, entries: list[Entry]) -> Path:
    """Write entries as an archive of the given format ("zip", "tar.gz", "tar")."""
    path = tmp_path / f"artifact.{fmt}"
    if fmt == "zip":
        return write_zip(path, entries)
    return write_tar(path, entries, gz=fmt == "tar.gz")


class Zeros:
    """A readable stream of n zero bytes, without holding them in memory."""

    def __init__(self, n: int):
        self.left = n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def patch_zip_headers(path: Path, *, set_flags: int = 0, method: int | None = None) -> None:
    """Rewrite flag bits / compression method in every local and central header."""
    data = bytearray(path.read_bytes())
    for magic, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = data.find(magic)
        while pos != -1:
            (flags,) = struct.unpack_from("<H", data, pos + flags_at)
            struct.pack_into("<H", data, pos + flags_at, flags | set_flags)
            if method is not None:
                struct.pack_into("<H", data, pos + flags_at + 2, method)
            pos = data.find(magic, pos + 4)
    path.write_bytes(bytes(data))


def replace_bytes(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    path.write_bytes(data.replace(old, new))


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def rejection(path: Path, limits: ArchiveLimits | None = None) -> ArchiveError:
    with pytest.raises(ArchiveError) as caught:
        inspect_archive(path, limits or ArchiveLimits())
    return caught.value


# --------------------------------------------------------------------------
# Accepted layouts


@pytest.mark.parametrize("wrapper", ["", "mymodel/"], ids=["bare", "wrapped"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_model_folder_splits_config_model_files_and_version_files(tmp_path, fmt, wrapper):
    found = inspect_archive(build(tmp_path, fmt, model_entries(wrapper)))

    assert found.format == fmt
    assert found.config_pbtxt == CONFIG.decode()
    assert found.model_files == {"labels.txt": len(LABELS)}
    assert found.version_files == {"model.py": len(MODEL_PY), "sub/weights.bin": len(WEIGHTS)}
    assert found.total_size == len(CONFIG) + len(LABELS) + len(MODEL_PY) + len(WEIGHTS)


def test_dot_slash_names_as_written_by_tar_c_dot_are_accepted(tmp_path):
    entries = [folder("./"), file("./config.pbtxt", CONFIG), folder("./1/"), file("./1/model.py", MODEL_PY)]
    found = inspect_archive(build(tmp_path, "tar.gz", entries))
    assert found.config_pbtxt == CONFIG.decode()
    assert found.version_files == {"model.py": len(MODEL_PY)}
    assert found.model_files == {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_version_folder_every_file_but_config_is_a_version_file(tmp_path, fmt):
    entries = [file("config.pbtxt", CONFIG), file("model.onnx", b"onnx"), file("tokenizer/vocab.txt", b"a b")]
    found = inspect_archive(build(tmp_path, fmt, entries))
    assert found.version_files == {"model.onnx": 4, "tokenizer/vocab.txt": 3}
    assert found.model_files == {}
    assert found.config_pbtxt == CONFIG.decode()


def test_wrapping_folder_is_stripped_even_without_config(tmp_path):
    found = inspect_archive(build(tmp_path, "zip", [file("mymodel/model.onnx", b"onnx")]))
    assert found.version_files == {"model.onnx": 4}
    assert found.config_pbtxt is None


def test_a_single_digit_top_folder_is_the_version_not_a_wrapper(tmp_path):
    found = inspect_archive(build(tmp_path, "tar", [file("7/model.py", MODEL_PY)]))
    assert found.version_files == {"model.py": len(MODEL_PY)}
    assert found.model_files == {}


def test_non_digit_folders_next_to_the_version_folder_hold_model_files(tmp_path):
    entries = [file("1/model.py", MODEL_PY), file("extras/vocab.txt", b"a b")]
    found = inspect_archive(build(tmp_path, "zip", entries))
    assert found.version_files == {"model.py": len(MODEL_PY)}
    assert found.model_files == {"extras/vocab.txt": 3}


def test_format_is_detected_from_content_not_file_name(tmp_path):
    path = write_zip(tmp_path / "artifact.tar.gz", model_entries())
    assert detect_format(path) == "zip"
    assert inspect_archive(path).format == "zip"


@pytest.mark.parametrize("fmt", FORMATS)
def test_detect_format_recognises_each_supported_format(tmp_path, fmt):
    assert detect_format(build(tmp_path, fmt, model_entries())) == fmt


def test_zip_names_without_utf8_flag_are_read_as_utf8(tmp_path):
    path = write_zip(tmp_path / "a.zip", [file("1/caf\u00e9.txt", b"x")])
    data = bytearray(path.read_bytes())
    for magic, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # clear the UTF-8 flag
        pos = data.find(magic)
        (flags,) = struct.unpack_from("<H", data, pos + flags_at)
        struct.pack_into("<H", data, pos + flags_at, flags & ~0x800)
    path.write_bytes(bytes(data))
    assert inspect_archive(path).version_files == {"caf\u00e9.txt": 1}


def test_zip_members_may_use_bzip2_or_lzma(tmp_path):
    path = write_zip(tmp_path / "a.zip", [file("1/a.bin", WEIGHTS)], compression=zipfile.ZIP_BZIP2)
    assert inspect_archive(path).version_files == {"a.bin": len(WEIGHTS)}
    path = write_zip(tmp_path / "b.zip", [file("1/a.bin", WEIGHTS)], compression=zipfile.ZIP_LZMA)
    assert inspect_archive(path).version_files == {"a.bin": len(WEIGHTS)}


# --------------------------------------------------------------------------
# Layout errors


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_version_folders_are_rejected(tmp_path, fmt):
    entries = [file("config.pbtxt", CONFIG), file("2/model.py"), file("1/model.py")]
    err = rejection(build(tmp_path, fmt, entries))
    assert str(err) == "the archive holds version folders 1, 2: upload one version per artifact"
    assert err.member is None


def test_an_empty_version_folder_is_rejected(tmp_path):
    entries = [file("config.pbtxt", CONFIG), file("labels.txt", LABELS), folder("1/")]
    assert str(rejection(build(tmp_path, "zip", entries))) == "version folder 1 holds no files"


def test_an_archive_with_only_config_pbtxt_is_rejected(tmp_path):
    err = rejection(build(tmp_path, "tar.gz", [file("mymodel/config.pbtxt", CONFIG)]))
    assert "no model files besides config.pbtxt" in str(err)


@pytest.mark.parametrize(
    "entries",
    [[], [folder("mymodel/"), folder("mymodel/1/")]],
    ids=["no-entries", "only-folders"],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_archive_without_files_is_rejected(tmp_path, fmt, entries):
    assert str(rejection(build(tmp_path, fmt, entries))) == "the archive holds no files"


def test_config_pbtxt_over_1_mib_is_rejected(tmp_path):
    entries = [file("m/config.pbtxt", b"#" * (MiB + 1)), file("m/1/model.py")]
    err = rejection(build(tmp_path, "tar.gz", entries))
    assert err.message == "config.pbtxt is larger than 1 MiB"
    assert err.member == "m/config.pbtxt"


def test_config_pbtxt_that_is_not_utf8_is_rejected(tmp_path):
    err = rejection(build(tmp_path, "zip", [file("config.pbtxt", b"name: \xff\xfe"), file("1/model.py")]))
    assert err.message == "config.pbtxt is not valid UTF-8 text"
    assert err.member == "config.pbtxt"


def test_config_pbtxt_inside_a_version_folder_is_an_ordinary_version_file(tmp_path):
    found = inspect_archive(build(tmp_path, "zip", [file("1/config.pbtxt", b"\xff" * (2 * MiB))]))
    assert found.config_pbtxt is None
    assert found.version_files == {"config.pbtxt": 2 * MiB}


# --------------------------------------------------------------------------
# Hostile member names


HOSTILE_NAMES = [
    pytest.param("/etc/passwd", "absolute paths are not allowed", id="absolute"),
    pytest.param("\\windows\\win.ini", "absolute paths are not allowed", id="backslash-absolute"),
    pytest.param("C:/model.py", "absolute Windows paths (drive letters) are not allowed", id="drive"),
    pytest.param("C:\\model.py", "absolute Windows paths (drive letters) are not allowed", id="drive-backslash"),
    pytest.param("c:model.py", "absolute Windows paths (drive letters) are not allowed", id="drive-relative"),
    pytest.param("../model.py", "'..' path components are not allowed", id="dotdot"),
    pytest.param("1/../../model.py", "'..' path components are not allowed", id="dotdot-inside"),
    pytest.param("1\\..\\..\\model.py", "'..' path components are not allowed", id="dotdot-backslash"),
    pytest.param("1/..", "'..' path components are not allowed", id="dotdot-last"),
    pytest.param("1/a\nb.py", "member name contains control character U+000A", id="newline"),
    pytest.param("1/a\x1b[31m.py", "member name contains control character U+001B", id="escape"),
    pytest.param("1/\u202eyp.exe", "member name contains control character U+202E", id="bidi-override"),
    pytest.param("1/" + "a" * 256, "member path has a component longer than 255 bytes", id="long-component"),
    pytest.param("1/" + "a/" * 2100 + "b", "member path is longer than 4096 bytes", id="long-path"),
]


@pytest.mark.parametrize(("name", "message"), HOSTILE_NAMES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_unsafe_member_names_are_rejected(tmp_path, fmt, name, message):
    err = rejection(build(tmp_path, fmt, [file("1/model.py"), file(name)]))
    assert err.message == message
    assert err.member == name


@pytest.mark.parametrize("fmt", FORMATS)
def test_unsafe_folder_names_are_rejected_too(tmp_path, fmt):
    err = rejection(build(tmp_path, fmt, [file("1/model.py"), folder("../escape/")]))
    assert err.message == "'..' path components are not allowed"


def test_zip_member_name_with_nul_byte_is_rejected(tmp_path):
    # zipfile itself silently cuts such a name at the NUL ("1/model.py")
    err = rejection(write_zip(tmp_path / "a.zip", [file("1/model.py\x00.txt")]))
    assert err.message == "member name contains a NUL byte"
    assert err.member == "1/model.py\x00.txt"


def test_zip_member_name_that_is_not_utf8_is_rejected(tmp_path):
    path = write_zip(tmp_path / "a.zip", [file("1/model.py"), file("1/X.py")])
    replace_bytes(path, b"1/X.py", b"1/\xff.py")  # in local and central header
    err = rejection(path)
    assert err.message == "member name is not valid UTF-8"


def test_tar_member_name_that_is_not_utf8_is_rejected(tmp_path):
    err = rejection(write_tar(tmp_path / "a.tar", [file("1/\udcff.py")], gz=False))
    assert err.message == "member name is not valid UTF-8"
    assert err.member == "1/\udcff.py"


# --------------------------------------------------------------------------
# Links, special files, duplicates


SPECIAL_MEMBERS = [
    ("symlink", "symbolic links are not allowed"),
    ("hardlink", "hard links are not allowed"),
    ("fifo", "FIFO members are not allowed: only regular files and folders"),
    ("chardev", "character device members are not allowed: only regular files and folders"),
    ("blockdev", "block device members are not allowed: only regular files and folders"),
]


@pytest.mark.parametrize(
    ("fmt", "kind", "message"),
    [
        (fmt, kind, message)
        for fmt in FORMATS
        for kind, message in SPECIAL_MEMBERS
        if not (fmt == "zip" and kind == "hardlink")  # zip has no hard links
    ],
)
def test_links_and_special_files_are_rejected(tmp_path, fmt, kind, message):
    target = "../../../etc/passwd" if kind in ("symlink", "hardlink") else ""
    entries = [file("1/model.py"), Entry("1/weights.bin", kind=kind, target=target)]
    err = rejection(build(tmp_path, fmt, entries))
    assert err.message == message
    assert err.member == "1/weights.bin"


def test_tar_sparse_files_are_rejected(tmp_path):
    entries = [file("1/model.py"), Entry("1/sparse.bin")]
    path = write_tar(tmp_path / "a.tar", entries, gz=False)
    data = bytearray(path.read_bytes())
    header = data.find(b"1/sparse.bin")
    data[header + 156 : header + 157] = tarfile.GNUTYPE_SPARSE  # typeflag field
    checksum = sum(data[header : header + 148]) + 8 * 32 + sum(data[header + 156 : header + 512])
    data[header + 148 : header + 156] = b"%06o\0 " % checksum
    path.write_bytes(bytes(data))
    err = rejection(path)
    assert err.message == "sparse files are not supported"
    assert err.member == "1/sparse.bin"


def test_tar_pax_sparse_files_are_rejected(tmp_path):
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("1/sparse.bin")
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tf.addfile(info, io.BytesIO())
    assert rejection(path).message == "sparse files are not supported"


DUPLICATES = [
    pytest.param("1/model.py", "1/model.py", id="same"),
    pytest.param("1/model.py", "./1/model.py", id="dot-slash"),
    pytest.param("1/model.py", "1//model.py", id="double-slash"),
    pytest.param("1/model.py", "1\\model.py", id="backslash"),
]


@pytest.mark.parametrize(("first", "second"), DUPLICATES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicate_member_paths_are_rejected(tmp_path, fmt, first, second):
    err = rejection(build(tmp_path, fmt, [file(first), file(second)]))
    assert err.message == "duplicate member path"
    assert err.member == second


@pytest.mark.parametrize(
    "entries",
    [
        [file("1/a"), file("1/a/b")],
        [file("1/a/b"), file("1/a")],
        [file("1/a"), folder("1/a/")],
        [folder("1/a/"), file("1/a")],
    ],
    ids=["file-then-child", "child-then-file", "file-then-folder", "folder-then-file"],
)
def test_a_path_cannot_be_both_file_and_folder(tmp_path, entries):
    err = rejection(build(tmp_path, "tar", entries))
    assert err.message == "path is used both as a file and as a folder"
    assert err.member == "1/a"


# --------------------------------------------------------------------------
# Resource limits


@pytest.mark.parametrize("fmt", FORMATS)
def test_entry_count_is_capped_by_max_entries(tmp_path, fmt):
    entries = [folder("1/")] + [file(f"1/f{i}.bin", b"x") for i in range(10)]
    path = build(tmp_path, fmt, entries)

    assert len(inspect_archive(path, ArchiveLimits(max_entries=11)).version_files) == 10
    err = rejection(path, ArchiveLimits(max_entries=10))
    assert err.message == "the archive holds more than 10 entries (max_entries)"


def test_zip_entry_count_is_checked_before_zipfile_loads_the_directory(tmp_path, monkeypatch):
    path = build(tmp_path, "zip", [file(f"1/f{i}.bin") for i in range(50)])

    def refuse(*args, **kwargs):
        raise AssertionError("zipfile.ZipFile must not be opened")

    monkeypatch.setattr(zipfile, "ZipFile", refuse)
    assert "more than 10 entries" in rejection(path, ArchiveLimits(max_entries=10)).message


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_a_compression_bomb_is_stopped_at_max_total_size(tmp_path, fmt):
    path = tmp_path / f"bomb.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("1/model.onnx", "w") as out:
            for _ in range(50):
                out.write(bytes(MiB))
    else:
        with tarfile.open(path, "w:gz") as tf:
            info = tarfile.TarInfo("1/model.onnx")
            info.size = 50 * MiB
            tf.addfile(info, Zeros(info.size))
    assert path.stat().st_size < MiB  # 50 MB of zeros packs into a few hundred KB

    err = rejection(path, ArchiveLimits(max_total_size=10 * MiB))
    assert err.message == f"the archive unpacks to more than {10 * MiB} bytes (max_total_size)"
    assert err.member == "1/model.onnx"


@pytest.mark.parametrize("fmt", FORMATS)
def test_total_size_is_summed_over_all_members(tmp_path, fmt):
    entries = [file(f"1/part{i}.bin", bytes(4 * MiB)) for i in range(3)]
    err = rejection(build(tmp_path, fmt, entries), ArchiveLimits(max_total_size=10 * MiB))
    assert "max_total_size" in err.message
    assert err.member == "1/part2.bin"


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_member_larger_than_max_member_size_is_rejected(tmp_path, fmt):
    entries = [file("1/small.bin", bytes(100)), file("1/big.bin", bytes(MiB + 1))]
    err = rejection(build(tmp_path, fmt, entries), ArchiveLimits(max_member_size=MiB))
    assert err.message == f"member unpacks to more than {MiB} bytes (max_member_size)"
    assert err.member == "1/big.bin"


def test_oversized_tar_metadata_headers_are_rejected(tmp_path):
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("1/model.py")
        info.pax_headers = {"comment": "x" * (100 * 1024)}
        tf.addfile(info, io.BytesIO())
    assert "metadata (pax or long name) header larger than 64 KiB" in rejection(path).message


# --------------------------------------------------------------------------
# Corrupt and truncated archives


def test_zip_member_with_bad_crc_is_rejected(tmp_path):
    path = write_zip(tmp_path / "a.zip", [file("1/model.py", b"hello world")], compression=zipfile.ZIP_STORED)
    replace_bytes(path, b"hello world", b"jello world")
    err = rejection(path)
    assert "corrupt" in err.message and "CRC" in err.message
    assert err.member == "1/model.py"


def test_zip_member_with_broken_deflate_stream_is_rejected(tmp_path):
    path = write_zip(tmp_path / "a.zip", [file("1/model.py", WEIGHTS)])
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("1/model.py")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start : start + info.compress_size] = b"\xff" * info.compress_size
    path.write_bytes(bytes(data))
    err = rejection(path)
    assert "corrupt" in err.message
    assert err.member == "1/model.py"


def test_tar_gz_with_damaged_compressed_data_is_rejected(tmp_path):
    path = build(tmp_path, "tar.gz", [file("1/model.bin", random_bytes(100_000))])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "corrupt" in rejection(path).message


def test_tar_gz_with_wrong_gzip_checksum_is_rejected(tmp_path):
    path = build(tmp_path, "tar.gz", model_entries())
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # CRC32 of the gzip trailer
    path.write_bytes(bytes(data))
    assert rejection(path).message.startswith("the gzip stream is corrupt")


def test_tar_with_corrupt_header_in_the_middle_is_rejected(tmp_path):
    path = build(tmp_path, "tar", [file("1/a.py", b"a"), file("1/b.py", b"b")])
    replace_bytes(path, b"1/b.py", b"1/c.py")  # header checksum no longer matches
    assert rejection(path).message.startswith("the tar archive holds a corrupt header")


@pytest.mark.parametrize("fmt", ["tar", "tar.gz"])
def test_tar_with_data_after_the_end_marker_is_rejected(tmp_path, fmt):
    path = build(tmp_path, "tar", model_entries())
    hidden = path.read_bytes() + write_tar(tmp_path / "hidden.tar", [file("1/evil.py")], gz=False).read_bytes()
    path.write_bytes(gzip.compress(hidden) if fmt == "tar.gz" else hidden)
    assert rejection(path).message == "the tar archive holds data after its end-of-archive marker"


def truncate_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("fmt", "cut"),
    [
        pytest.param("zip", truncate_half, id="zip-half"),
        pytest.param("zip", lambda data: data[:-10], id="zip-end-record-cut"),
        pytest.param("tar.gz", truncate_half, id="tar.gz-half"),
        pytest.param("tar.gz", lambda data: data[:-4], id="tar.gz-trailer-cut"),
        pytest.param("tar", truncate_half, id="tar-half"),
    ],
)
def test_truncated_archives_are_rejected(tmp_path, fmt, cut):
    entries = [file("1/a.bin", b"a" * 10), file("1/b.bin", random_bytes(50_000))]
    path = build(tmp_path, fmt, entries)
    path.write_bytes(cut(path.read_bytes()))
    assert "truncated" in rejection(path).message


def test_tar_cut_exactly_between_two_members_is_rejected(tmp_path):
    # plain tarfile would silently report just the first member
    path = build(tmp_path, "tar", [file("1/a.bin", b"a" * 10), file("1/b.bin", b"b" * 10)])
    path.write_bytes(path.read_bytes()[:1024])  # header + data block of 1/a.bin
    assert rejection(path).message == "the tar archive is truncated (it ends without an end-of-archive marker)"


def test_encrypted_zip_members_are_rejected(tmp_path):
    path = write_zip(tmp_path / "a.zip", [file("1/model.py", b"secret")])
    patch_zip_headers(path, set_flags=0x1)
    err = rejection(path)
    assert err.message == "encrypted members are not supported"
    assert err.member == "1/model.py"


def test_unknown_zip_compression_methods_are_rejected(tmp_path):
    path = write_zip(tmp_path / "a.zip", [file("1/model.py", b"data")])
    patch_zip_headers(path, method=99)
    err = rejection(path)
    assert err.message == "unsupported zip compression method 99"
    assert err.member == "1/model.py"


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_damage_only_ever_raises_archive_error(tmp_path, fmt):
    """Fuzz: damaged archives raise nothing but ArchiveError, and not for our own bugs."""
    pristine = build(tmp_path, fmt, model_entries("m/")).read_bytes()
    rng = random.Random(fmt)
    path = tmp_path / "damaged"
    for _ in range(150):
        data = bytearray(pristine)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            inspect_archive(path)
        except ArchiveError as err:
            assert not isinstance(err.__cause__, TypeError | AttributeError | NameError | AssertionError), err


# --------------------------------------------------------------------------
# Not archives at all


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"R" + random_bytes(4095), "not a zip or tar archive (unrecognised file signature)", id="random"),
        pytest.param(b"name: 'x'\n" * 100, "not a zip or tar archive (unrecognised file signature)", id="text"),
        pytest.param(b"", "not a zip or tar archive (the file is empty)", id="empty"),
        pytest.param(
            gzip.compress(b"just text\n" * 100),
            "the file is gzip-compressed but does not hold a tar archive",
            id="gzipped-text",
        ),
        pytest.param(
            bz2.compress(bytes(10240)),
            "bzip2/xz-compressed archives are not supported: use .zip, .tar or .tar.gz",
            id="bzip2",
        ),
    ],
)
def test_files_that_are_not_archives_are_rejected(tmp_path, content, message):
    path = tmp_path / "upload.zip"
    path.write_bytes(content)
    with pytest.raises(ArchiveError) as caught:
        detect_format(path)
    assert caught.value.message == message
    assert rejection(path).message == message


def test_a_missing_file_is_reported_as_archive_error(tmp_path):
    assert rejection(tmp_path / "nope.zip").message.startswith("cannot open the archive file")


# --------------------------------------------------------------------------
# iter_files


@pytest.mark.parametrize("wrapper", ["", "mymodel/"], ids=["bare", "wrapped"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_iter_files_yields_every_model_and_version_file_with_its_bytes(tmp_path, fmt, wrapper):
    path = build(tmp_path, fmt, model_entries(wrapper))
    found = inspect_archive(path)

    assert sorted(iter_files(path, found)) == [
        ("model", "labels.txt", LABELS),
        ("version", "model.py", MODEL_PY),
        ("version", "sub/weights.bin", WEIGHTS),
    ]


def test_iter_files_is_lazy_and_can_be_abandoned(tmp_path):
    path = build(tmp_path, "tar.gz", model_entries())
    files = iter_files(path, inspect_archive(path))
    assert next(files) == ("model", "labels.txt", LABELS)
    files.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_iter_files_notices_an_archive_changed_since_inspection(tmp_path, fmt):
    path = build(tmp_path, fmt, model_entries())
    found = inspect_archive(path)
    entries = model_entries()
    entries[3] = file("1/model.py", MODEL_PY + b"# tampered\n")
    build(tmp_path, fmt, entries)

    with pytest.raises(ArchiveError) as caught:
        list(iter_files(path, found))
    assert caught.value.message == "the archive changed since it was inspected (size differs)"
    assert caught.value.member == "1/model.py"


def test_iter_files_notices_a_missing_member(tmp_path):
    path = build(tmp_path, "zip", model_entries())
    found = inspect_archive(path)
    build(tmp_path, "zip", [e for e in model_entries() if e.name != "1/sub/weights.bin"])
    with pytest.raises(ArchiveError, match="member missing"):
        list(iter_files(path, found))


# --------------------------------------------------------------------------
# ArchiveError itself


def test_archive_error_is_a_value_error_that_shows_the_member():
    err = ArchiveError("symbolic links are not allowed", "1/link")
    assert isinstance(err, ValueError)
    assert str(err) == "symbolic links are not allowed: 1/link"
    assert (err.message, err.member) == ("symbolic links are not allowed", "1/link")


def test_archive_error_escapes_unprintable_member_names():
    assert str(ArchiveError("bad", "1/a\nb")) == "bad: '1/a\\nb'"


def test_model_folder_repr_hides_the_member_mapping(tmp_path):
    found = inspect_archive(build(tmp_path, "zip", model_entries()))
    assert isinstance(found, ModelFolder)
    assert "_members" not in repr(found)


def test_stored_zip_ranges_point_at_the_bytes_of_uncompressed_members_only(tmp_path):
    weights, script = random.randbytes(70_000), b"print('hi')\n" * 100
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("1/weights.bin", weights, zipfile.ZIP_STORED)
        zf.writestr("1/model.py", script, zipfile.ZIP_DEFLATED)
        zf.writestr("labels.txt", b"a\nb\n", zipfile.ZIP_STORED)
    folder = inspect_archive(path)

    ranges = stored_zip_ranges(path, folder)

    assert set(ranges) == {("version", "weights.bin"), ("model", "labels.txt")}
    data = path.read_bytes()
    offset, size = ranges["version", "weights.bin"]
    assert data[offset : offset + size] == weights
    offset, size = ranges["model", "labels.txt"]
    assert data[offset : offset + size] == b"a\nb\n"


def test_stored_zip_ranges_of_a_tar_are_empty(tmp_path):
    path = tmp_path / "model.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("1/model.py")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"x=1"))
    assert stored_zip_ranges(path, inspect_archive(path)) == {}
