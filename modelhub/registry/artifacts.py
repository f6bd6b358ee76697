"""Reading a stored artifact back: the files a Triton load sends."""

from dataclasses import dataclass

from django.conf import settings

from modelhub.lib import archives
from modelhub.registry.models import ArtifactFormat, ModelVersion


def archive_limits() -> archives.ArchiveLimits:
    return archives.ArchiveLimits(
        max_entries=settings.MAX_ARCHIVE_ENTRIES,
        max_total_size=settings.MAX_UNPACKED_BYTES,
        max_member_size=settings.MAX_UNPACKED_BYTES,
    )


@dataclass
class ArtifactFiles:
    version_files: dict[str, bytes]  # path inside the version folder -> bytes
    model_files: dict[str, bytes]  # model-level files (labels, …) -> bytes


def read_artifact_files(version: ModelVersion) -> ArtifactFiles:
    # FileSystemStorage has a local path; a remote storage would need a local
    # copy first (zip and tar need to seek or stream a file object).
    path = version.artifact.path
    if version.artifact_format == ArtifactFormat.ONNX:
        with open(path, "rb") as fh:
            return ArtifactFiles({"model.onnx": fh.read()}, {})
    folder = archives.inspect_archive(path, archive_limits())
    result = ArtifactFiles({}, {})
    for kind, relpath, data in archives.iter_files(path, folder):
        (result.version_files if kind == "version" else result.model_files)[relpath] = data
    return result
