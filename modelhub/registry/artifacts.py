"""Reading a stored artifact back: the files a Triton load sends."""

from collections.abc import Callable, Collection, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import IO

from django.conf import settings

from modelhub.lib import archives
from modelhub.registry.models import ArtifactFormat, ModelVersion
from modelhub.registry.storage import open_source


def archive_limits() -> archives.ArchiveLimits:
    return archives.ArchiveLimits(
        max_entries=settings.MAX_ARCHIVE_ENTRIES,
        max_total_size=settings.MAX_UNPACKED_BYTES,
        max_member_size=settings.MAX_UNPACKED_BYTES,
        max_ratio=settings.MAX_COMPRESSION_RATIO,
        ratio_floor=settings.COMPRESSION_RATIO_FLOOR_BYTES,
    )


Member = tuple[str, str, IO[bytes]]  # (kind "version" or "model", relpath, stream)


@dataclass(frozen=True)
class ArtifactFiles:
    """A stored artifact's files: sizes from the archive listing, bytes streamed on demand."""

    version_files: dict[str, int]  # path inside the version folder -> size
    model_files: dict[str, int]  # model-level files (labels, …) -> size
    source: str | Callable[[], IO[bytes]]  # the stored artifact: a local path, or how to open it (a bucket)
    folder: archives.ModelFolder | None  # None: a bare model.onnx

    @property
    def path(self) -> str | None:
        """The stored file on this machine's disk; None in object storage (read it through `streams`)."""
        return self.source if isinstance(self.source, str) else None

    def size(self, kind: str, relpath: str) -> int:
        return (self.version_files if kind == "version" else self.model_files)[relpath]

    def stored_ranges(self) -> dict[tuple[str, str], tuple[int, int]]:
        """`(kind, relpath) -> (offset, size)` of the files kept byte for byte in the
        stored file (a zip's uncompressed members, a bare model.onnx): they can be
        copied out of `path` directly, without decompressing. None without a local path."""
        if self.path is None:
            return {}
        if self.folder is None:
            return {("version", ONNX_NAME): (0, self.version_files[ONNX_NAME])}
        return archives.stored_zip_ranges(self.path, self.folder)

    @contextmanager
    def streams(
        self, wanted: Collection[tuple[str, str]] | None = None
    ) -> Iterator[Iterator[tuple[str, str, IO[bytes]]]]:
        """Yields an iterator of `(kind, relpath, stream)`, kind "version" or "model",
        for the `wanted` files (default: all), in the artifact's order. Each stream
        is valid until the next item; nothing is read whole into memory."""
        if self.folder is None:
            if wanted is not None and ("version", ONNX_NAME) not in wanted:
                yield iter(())
                return
            with open(self.source, "rb") if self.path else self.source() as fh:
                yield iter([("version", ONNX_NAME, fh)])
            return
        with closing(archives.iter_member_streams(self.source, self.folder, wanted)) as members:
            yield members


ONNX_NAME = "model.onnx"


def read_artifact_files(version: ModelVersion) -> ArtifactFiles:
    """List a version's stored files (cheap: data is not read; see ArtifactFiles.streams)."""
    # A local file (the default storage) or a seekable stream of an object in a bucket:
    # zip and tar read either, in chunks.
    source = open_source(version.artifact)
    if version.artifact_format == ArtifactFormat.ONNX:
        return ArtifactFiles({ONNX_NAME: version.artifact.size}, {}, source, None)
    folder = archives.list_archive(source, archive_limits())
    return ArtifactFiles(dict(folder.version_files), dict(folder.model_files), source, folder)
