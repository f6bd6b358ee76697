"""Streaming artifact uploads: to a temporary file, hashed on the way, capped in size.

The upload view installs ArtifactUploadHandler before anything reads the
request body, so the multipart parser hands each chunk to it: the chunk is
counted, hashed and written to a temporary file, and nothing larger than
one chunk is ever held in memory. Past MAX_ARTIFACT_BYTES the upload stops
with 413 and the partial file is removed.
"""

import hashlib
import os
from contextlib import suppress

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from modelhub.api.errors import LengthRequired, TooLarge
from modelhub.lib.diskspace import StorageFull, is_full

# Room for the manifest and the multipart framing around the artifact.
_ENVELOPE_BYTES = 64 * 1024


def max_upload_body() -> int:
    return settings.MAX_ARTIFACT_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE + _ENVELOPE_BYTES


def _too_large() -> TooLarge:
    return TooLarge(
        f"the artifact is larger than the limit of {settings.MAX_ARTIFACT_BYTES} bytes "
        "(setting MODELHUB_MAX_ARTIFACT_BYTES)"
    )


def check_content_length(request) -> None:
    """Refuse a body without a length, or announced as too large, before reading any of it.

    Django's multipart parser reads exactly Content-Length bytes: a chunked
    body (no Content-Length) would look empty and be answered "artifact:
    required", which sends the caller looking in the wrong place.
    """
    raw = (request.META.get("CONTENT_LENGTH") or "").strip()
    if not raw.isdigit():
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        raise LengthRequired(
            "the upload has no Content-Length header"
            + (" (it was sent with Transfer-Encoding: chunked)" if chunked else "")
            + ": send the multipart body with its length, as curl -F and requests do"
        )
    if int(raw) > max_upload_body():
        raise _too_large()


class ArtifactUploadHandler(TemporaryFileUploadHandler):
    """Write uploaded files to temporary files, computing sha256 and size as they arrive.

    The file objects it returns carry `.sha256`. Files are deleted when closed
    (Django closes request files when the response is done).
    """

    chunk_size = 1024 * 1024  # larger chunks: fewer Python calls per GiB

    def __init__(self, request=None):
        super().__init__(request)
        self.received = 0  # over every file of the request
        self.created = []

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.created.append(self.file)
        self.digest = hashlib.sha256()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.received += len(raw_data)
        if self.received > settings.MAX_ARTIFACT_BYTES:
            self.discard()
            raise _too_large()
        self.digest.update(raw_data)
        try:
            self.file.write(raw_data)
        except OSError as exc:
            self._failed(exc)
        return None

    def file_complete(self, file_size: int):
        try:
            uploaded = super().file_complete(file_size)  # flushes the last buffered bytes
        except OSError as exc:
            self._failed(exc)
        uploaded.sha256 = self.digest.hexdigest()
        return uploaded

    def _failed(self, exc: OSError):
        self.discard()
        if is_full(exc):
            raise StorageFull(
                "upload temporary folder", "MODELHUB_UPLOAD_TEMP_DIR", settings.FILE_UPLOAD_TEMP_DIR, exc
            ) from exc
        raise exc

    def discard(self) -> None:
        """Close (and so delete) every temporary file this request created."""
        for uploaded in self.created:
            try:
                uploaded.close()
            except OSError:  # its unwritten buffer met a full disk: remove the file all the same
                with suppress(FileNotFoundError):
                    os.remove(uploaded.temporary_file_path())
        self.created = []


def install(request) -> ArtifactUploadHandler:
    """Make `request` (DRF's Request) stream its files through an ArtifactUploadHandler.

    Must run before anything reads the body: authentication included, since
    session authentication reads the form for its CSRF check.
    """
    handler = ArtifactUploadHandler(request._request)
    request._request.upload_handlers = [handler]
    return handler
