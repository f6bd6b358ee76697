"""A full disk while an upload is received or stored: StorageFull names the store that is full.

ENOSPC (no space), EDQUOT (quota) and EFBIG (file too large for the filesystem) are the
operator's to fix, not the caller's mistake and not a bug: the API answers 413
storage_full naming the store and its setting, and what was half-written is removed
so that no half-written file is ever taken for a stored one.
"""

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def free_bytes(path) -> int | None:
    """Free bytes of the filesystem holding `path`; None where it cannot be read."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


class StorageFull(OSError):
    """A write ran out of room: `store` says which ("artifact store", "upload temporary folder")."""

    def __init__(self, store: str, setting: str, path, cause: OSError):
        free = free_bytes(path)
        self.store, self.setting, self.path = store, setting, str(path)
        # The setting, not the path: the caller (a CI job) is told where, the server log has the path.
        self.message = (
            f"the {store} is full: {os.strerror(cause.errno)} "
            f"(setting {setting}{f'; {free} bytes free' if free is not None else ''}); nothing was kept"
        )
        super().__init__(cause.errno, self.message)

    def __str__(self) -> str:
        return self.message


@contextmanager
def saving(storage, name: str, *, store: str, setting: str, max_length: int | None = None) -> Iterator[None]:
    """Around a save of `name` (the field's file name) into a Django storage: on a full
    disk, remove the half-written file (and its folder, left empty) and raise StorageFull.

    The half-written file is the one storage.get_available_name names just before the
    save, as the save itself will (its O_EXCL open refuses to write over another's file).
    """
    try:
        storage.path(name)
    except NotImplementedError:  # a bucket: nothing local is written (and no lookup is spent on it)
        path = None
    else:
        path = storage.path(storage.get_available_name(name, max_length=max_length))
    try:
        yield
    except StorageFull:
        raise
    except OSError as exc:
        if not is_full(exc):
            raise
        if path is None:
            raise StorageFull(store, setting, name, exc) from exc
        with suppress(FileNotFoundError):
            os.remove(path)
        folder = os.path.dirname(path)
        if os.path.abspath(folder) != os.path.abspath(storage.location):
            with suppress(OSError):  # not empty: other files live there
                os.rmdir(folder)
        raise StorageFull(store, setting, storage.location, exc) from exc
