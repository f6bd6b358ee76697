"""Model folders in a Triton model repository that ModelHub writes and Triton reads.

A server with a `model_repository` folder (its Triton's --model-repository:
a shared volume, or the same host) gets each model's files written there, and
its load request carries the config only: Triton reads the files from disk,
which for a large model is several times faster than receiving them base64
inside the request. Layout, as Triton wants it, one folder per Triton model,
i.e. per version (`<model>__v<n>`, serving.models.triton_model_name):

    <repository>/<model>__v<n>/<n>/...   the artifact's version files
    <repository>/<model>__v<n>/<file>    model-level files (labels, ...)

A version folder is immutable (version numbers are never reused and a
version's bytes never change), so a complete one is reused as it is. A new
one is built in a hidden sibling folder and renamed into place: Triton never
sees a half-written folder. A marker file in it names the artifact's sha256, so
a folder left by a deleted model of the same name is rebuilt, not reused.
Generated files (labels, the ONNX runner's model.py) are small and written on
every load, each to a temporary file renamed over the old one.

The reconciler calls this module under its (server, model) lock, so one
worker at a time writes one model's folders of one server. `model` below is
the Triton model's name.
"""

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from modelhub.registry.artifacts import ArtifactFiles

# Copy buffer: few system calls per file (the default is 64 KiB), little memory (a copy holds two).
COPY_BUFFER_BYTES = 1024 * 1024
MARKER = ".modelhub-sha256"
_TEMP_PREFIX = ".modelhub-tmp-"


class ModelRepositoryError(Exception):
    """The model repository folder cannot be used (missing, not writable, a write failed)."""


def check_writable(root: str, server_name: str) -> Path:
    """The repository folder, if this process can write it; else a ModelRepositoryError saying why."""
    path = Path(root)
    where = f"the model repository folder {root} of server {server_name}"
    if not path.is_dir():
        raise ModelRepositoryError(f"{where} does not exist (or is not a folder) on this worker")
    # Try it: os.access says yes to root on a read-only file system and knows nothing of NFS squashing.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=path))
    except OSError as exc:
        raise ModelRepositoryError(f"{where} is not writable by this worker (user id {os.getuid()}): {exc}") from exc
    return path


def write_model_folder(
    root: str,
    server_name: str,
    model: str,
    versions: Mapping[int, tuple[str, ArtifactFiles]],
    model_files: Mapping[str, ArtifactFiles],
    generated: Mapping[str, bytes],
) -> None:
    """Make `<root>/<model>` hold what a load of `versions` needs.

    `versions` maps each version number to (artifact sha256, its files);
    `model_files` maps a model-level path to the artifact it comes from;
    `generated` maps paths inside the model folder ("labels.txt",
    "3/model.py") to their bytes.
    """
    folder = _inside(check_writable(root, server_name), model)
    try:
        folder.mkdir(exist_ok=True)
        for number, (sha256, artifact) in sorted(versions.items()):
            _ensure_version_folder(folder, number, sha256, artifact)
        by_artifact: dict[int, tuple[ArtifactFiles, dict[tuple[str, str], str]]] = {}
        for path, artifact in model_files.items():
            by_artifact.setdefault(id(artifact), (artifact, {}))[1][("model", path)] = path
        for artifact, wanted in by_artifact.values():
            with artifact.streams(wanted) as members:
                for kind, relpath, stream in members:
                    _replace_file(_inside(folder, wanted[kind, relpath]), lambda out, s=stream: _copy(s, out))
        for path, data in generated.items():
            _replace_file(_inside(folder, path), lambda out, d=data: out.write(d))
    except OSError as exc:
        raise ModelRepositoryError(
            f"writing {model}'s files to the model repository folder {root} of server {server_name} failed: {exc}"
        ) from exc


def remove_versions_except(root: str, model: str, keep: set[int]) -> None:
    """Remove the version folders of `model` not in `keep`, and leftovers of interrupted writes."""
    folder = _inside(Path(root), model)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if (entry.name.isdigit() and int(entry.name) not in keep) or entry.name.startswith(_TEMP_PREFIX):
            _remove(entry)


def remove_model(root: str, model: str) -> None:
    """Remove `model`'s whole folder (after it is unloaded)."""
    folder = _inside(Path(root), model)
    if folder.exists():
        _remove(folder)


def _ensure_version_folder(folder: Path, number: int, sha256: str, artifact: ArtifactFiles) -> None:
    target = folder / str(number)
    if _marker(target) == sha256:
        return  # complete: it was renamed into place whole
    staging = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{number}-", dir=folder))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide it from a Triton running as another user
        _fill_version_folder(staging, artifact)
        (staging / MARKER).write_text(sha256)
        if target.exists():  # not ours (no or another marker): a deleted model's, or a hand-made one
            stale = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}stale-", dir=folder))
            target.rename(stale / "old")
            _remove(stale)
        staging.rename(target)
    except BaseException:
        _remove(staging)
        raise


def _fill_version_folder(staging: Path, artifact: ArtifactFiles) -> None:
    if artifact.folder is None and artifact.path:  # a bare model.onnx on disk: a hard link costs nothing
        (relpath,) = artifact.version_files
        try:
            os.link(artifact.path, staging / relpath)
            return
        except OSError:  # another file system, or links not allowed: copy it
            pass
    # Files the artifact keeps byte for byte (a zip's uncompressed members: model
    # weights are usually stored so) are copied in the kernel; the rest are decompressed.
    ranges = {relpath: span for (kind, relpath), span in artifact.stored_ranges().items() if kind == "version"}
    if ranges:
        with open(artifact.path, "rb") as source:
            for relpath, (offset, size) in ranges.items():
                target = _inside(staging, relpath)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    _copy_range(source, out, offset, size)
    rest = [("version", path) for path in artifact.version_files if path not in ranges]
    if not rest:
        return
    with artifact.streams(rest) as members:
        for _kind, relpath, stream in members:
            target = _inside(staging, relpath)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                _copy(stream, out)


def _replace_file(target: Path, write) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide it from a Triton running as another user
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _copy(stream, out) -> None:
    shutil.copyfileobj(stream, out, COPY_BUFFER_BYTES)


def _copy_range(source, out, offset: int, size: int) -> None:
    """Copy `size` bytes at `offset` of `source` to `out`: in the kernel where it can
    (os.copy_file_range), else through a buffer."""
    src, dst, done = source.fileno(), out.fileno(), 0
    try:
        while done < size:
            copied = os.copy_file_range(src, dst, size - done, offset + done)
            if copied == 0:
                break
            done += copied
    except OSError:  # not supported between these file systems: the plain way
        pass
    while done < size:
        chunk = os.pread(src, min(COPY_BUFFER_BYTES, size - done), offset + done)
        if not chunk:
            break
        done += len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
    if done != size:
        raise OSError(f"the stored artifact ended {size - done} bytes early")


def _marker(folder: Path) -> str | None:
    try:
        return (folder / MARKER).read_text()
    except OSError:
        return None


def _inside(folder: Path, relpath: str) -> Path:
    """`folder / relpath`, refused if it would leave `folder` (names come from archives and users)."""
    target = (folder / relpath).resolve()
    if not target.is_relative_to(folder.resolve()) or target == folder.resolve():
        raise ModelRepositoryError(f"{relpath!r} is not a path inside {folder}")
    return folder / relpath


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
