"""Where artifacts and evaluation sets are kept: a local folder (the default) or an
S3-compatible bucket (MODELHUB_ARTIFACT_STORAGE=s3), both behind Django's storage API.

A bucket has no local path, so nothing may ask a stored file for one: readers open
the stored file (`open_source`) and get a seekable stream, writers hand `save()` a
file on disk. Both ways stream:

- a save of a local file (an upload's temporary file) is boto3's managed upload of
  that file name, multipart above 8 MiB, each part read from disk as it is sent;
- an open answers a seekable file whose reads stream one GET from where the reader
  is; a seek elsewhere (a zip's central directory, then its members) starts a
  ranged GET there. Memory is the read buffer, never the object.

django-storages' own S3File would download the whole object into a spooled
temporary file (in memory unless AWS_S3_MAX_MEMORY_SIZE is set) before the first
byte could be read: a 4 GiB model held before its load even starts.

Every failure to reach or use the bucket is a StorageUnavailable naming the bucket
and the endpoint. It is an OSError (an archives.SourceError, which the archive reader passes through
rather than calling the archive corrupt), so the places that already treat a failed
file operation (deleting a stale file, writing a model repository, a load that
could not be prepared) treat a failed bucket the same way; the API answers 503.
"""

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.core.files import File
from django.db.models.fields.files import FieldFile
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from modelhub.lib import archives

# Read buffer of an opened object: few GET reads per MiB, little memory.
READ_BUFFER_BYTES = 1024 * 1024


class StorageUnavailable(archives.SourceError):
    """The artifact storage could not be used: unreachable, credentials refused, no such bucket…
    The message names the bucket, the endpoint and the file."""


def local_path(stored: FieldFile) -> str | None:
    """The stored file's path on this machine, or None where the storage has none (a bucket)."""
    try:
        return stored.path
    except NotImplementedError:
        return None


def open_source(stored: FieldFile) -> str | Callable[[], IO[bytes]]:
    """What readers take: the local path where there is one (the fast paths: hard links,
    in-kernel copies), else a function opening a seekable stream of the stored file."""
    path = local_path(stored)
    if path is not None:
        return path
    storage, name = stored.storage, stored.name
    return lambda: storage.open(name, "rb")


class ArtifactS3Storage(S3Storage):
    """django-storages' S3 backend, streaming both ways, with errors that name the bucket."""

    def __init__(self, *, connect_timeout: float = 5.0, max_attempts: int = 3, **settings):
        super().__init__(**settings)
        # boto3 waits 60 s to connect and retries with back-off: an unreachable endpoint
        # must answer a request in seconds, not minutes.
        self.client_config = self.client_config.merge(
            Config(connect_timeout=connect_timeout, retries={"mode": "standard", "max_attempts": max_attempts})
        )

    def describe(self) -> str:
        where = self.endpoint_url or "AWS S3" + (f" ({self.region_name})" if self.region_name else "")
        prefix = f" under {self.location}/" if self.location else ""
        return f"S3 bucket {self.bucket_name!r}{prefix} at {where}"

    @contextmanager
    def failing_as(self, action: str, name: str) -> Iterator[None]:
        """Turn boto's errors into a StorageUnavailable saying what could not be done where."""
        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise StorageUnavailable(
                f"the artifact storage ({self.describe()}) could not {action} {name}: {exc}"
            ) from exc

    def _open(self, name: str, mode: str = "rb") -> File:
        if mode != "rb":
            raise ValueError(f"stored files are opened to read them (mode 'rb'), not {mode!r}; save() writes them")
        key = self._normalize_name(clean_name(name))
        with self.failing_as("read", name):
            try:
                head = self.connection.meta.client.head_object(Bucket=self.bucket_name, Key=key)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    raise FileNotFoundError(f"{name} is not in the artifact storage ({self.describe()})") from None
                raise
        return _ObjectFile(_ObjectReader(self, key, head["ContentLength"], name), name)

    def _save(self, name: str, content) -> str:
        path = _path_on_disk(content)
        if path is None:  # not a file on disk: django-storages' upload (each part buffered in memory)
            with self.failing_as("store", name):
                return super()._save(name, content)
        cleaned = clean_name(name)
        key = self._normalize_name(cleaned)
        with self.failing_as("store", name):
            # upload_file, not upload_fileobj: from a file name each part is read from
            # disk while it is sent, where a file object's parts are copied into memory.
            self.bucket.Object(key).upload_file(
                path, ExtraArgs=self._get_write_parameters(key, content), Config=self.transfer_config
            )
        return cleaned

    def _get_write_parameters(self, name: str, content=None) -> dict:
        # Opaque bytes: guessed from ".tar.gz", "Content-Encoding: gzip" would have HTTP
        # clients (a browser following a presigned URL, a proxy) unpack the artifact on the way.
        return {"ContentType": "application/octet-stream", **self.get_object_parameters(name)}

    def exists(self, name: str) -> bool:
        with self.failing_as("look up", name):
            return super().exists(name)

    def delete(self, name: str) -> None:
        with self.failing_as("delete", name):
            super().delete(name)

    def size(self, name: str) -> int:
        with self.failing_as("read the size of", name):
            return super().size(name)


def _path_on_disk(content) -> str | None:
    """The local file behind `content` (an upload's temporary file, an open file), if any."""
    if hasattr(content, "temporary_file_path"):
        return content.temporary_file_path()
    name = getattr(getattr(content, "file", None), "name", None)
    return name if isinstance(name, str) and os.path.isfile(name) else None


class _ObjectFile(File):
    """An opened stored object. Django reopens a closed local file by its path; this one
    reopens by starting a new reader (a FieldFile opened, closed and opened again)."""

    def __init__(self, reader: "_ObjectReader", name: str):
        super().__init__(io.BufferedReader(reader, READ_BUFFER_BYTES), name)
        self._reader = reader
        self.size = reader.size

    def open(self, mode: str | None = None) -> "_ObjectFile":
        if mode not in (None, "rb"):
            raise ValueError(f"stored files are opened to read them (mode 'rb'), not {mode!r}")
        if self.closed:
            self._reader = self._reader.reopened()
            self.file = io.BufferedReader(self._reader, READ_BUFFER_BYTES)
        else:
            self.seek(0)
        return self


class _ObjectReader(io.RawIOBase):
    """One stored object as a seekable binary file.

    Reads come from one GET that streams from the current position; a seek
    elsewhere closes it, and the next read opens a ranged GET there (seeking
    alone costs nothing: FileResponse seeks to the end for the length).
    """

    def __init__(self, storage: ArtifactS3Storage, key: str, size: int, name: str):
        super().__init__()
        self._storage, self._key, self._size, self._name = storage, key, size, name
        self._pos = 0
        self._body = None  # the open GET's body, positioned at self._pos

    @property
    def size(self) -> int:
        return self._size

    def reopened(self) -> "_ObjectReader":
        return _ObjectReader(self._storage, self._key, self._size, self._name)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        position = base + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        if position != self._pos:
            self._drop_body()
            self._pos = position
        return position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._size - self._pos)
        if wanted <= 0:
            return 0
        with self._storage.failing_as("read", self._name):
            if self._body is None:
                client = self._storage.connection.meta.client
                answer = client.get_object(Bucket=self._storage.bucket_name, Key=self._key, Range=f"bytes={self._pos}-")
                self._body = answer["Body"]
            data = self._body.read(wanted)
        if not data:
            self._drop_body()
            raise StorageUnavailable(
                f"the artifact storage ({self._storage.describe()}) ended {self._name} at byte {self._pos} "
                f"of {self._size}"
            )
        count = len(data)
        buffer[:count] = data
        self._pos += count
        return count

    def close(self) -> None:
        self._drop_body()
        super().close()

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
