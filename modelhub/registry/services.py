"""Registering model versions: the one path from uploaded bytes to a version row.

The artifact is inspected before anything is kept; the stored file and the
database rows appear together or not at all.
"""

import errno
import hashlib
import logging
import os
import posixpath
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, transaction

from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.lib import archives, diskspace, onnx_models
from modelhub.registry.artifacts import archive_limits
from modelhub.registry.manifest import Manifest, ManifestError, parse_manifest
from modelhub.registry.models import Alias, AliasMove, ArtifactFormat, Model, ModelVersion, TaskKind, TensorSpec
from modelhub.registry.triton_config import ConfigError, parse_config_pbtxt, schema_from_config

log = logging.getLogger(__name__)


class NameTaken(ValueError):
    """Creating something whose name is already in use."""


class InUse(Exception):
    """Deleting something still in use (behind an alias, deployed, …); the message says where."""


class VersionConflict(Exception):
    """The same bytes are registered already, with a different serving schema."""


@dataclass
class Registration:
    version: ModelVersion
    created: bool  # False when the same bytes were already registered for this model


def sha256_of(path: str | Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass
class InspectedArtifact:
    format: str
    version_files: dict[str, int]
    model_files: dict[str, int]
    derived: dict  # schema and settings the artifact itself declares


def inspect_artifact(path: str | Path, raw_manifest: dict) -> InspectedArtifact:
    """Validate an uploaded artifact and read what it says about itself."""
    if onnx_models.is_onnx(path):
        try:
            signature = onnx_models.read_onnx_signature(path)
        except onnx_models.OnnxError as exc:
            raise ManifestError({"artifact": str(exc)}) from exc
        mbs = raw_manifest.get("max_batch_size", 0) if isinstance(raw_manifest, dict) else 0
        strip = isinstance(mbs, int) and mbs > 0
        if strip and not signature.batchable:
            unbatched = [
                f"{kind} {s.name!r} has shape {s.dims}"
                for kind, sigs in (("input", signature.inputs), ("output", signature.outputs))
                for s in sigs
                if not s.dims or s.dims[0] != -1
            ]
            raise ManifestError(
                {
                    "manifest.max_batch_size": f"{mbs} needs a variable first (batch) dimension on every tensor "
                    f"of the ONNX graph, and {'; '.join(unbatched)}"
                }
            )

        # An ONNX shape [N] (one value per sample) becomes dims []: see triton_config.served_dims.
        def tensors(sigs):
            return [
                {"name": s.name, "datatype": s.datatype, "dims": list(s.dims[1:] if strip else s.dims), "labels": None}
                for s in sigs
            ]

        derived = {
            "platform": "onnxruntime_onnx",
            "inputs": tensors(signature.inputs),
            "outputs": tensors(signature.outputs),
        }
        return InspectedArtifact(ArtifactFormat.ONNX, {"model.onnx": Path(path).stat().st_size}, {}, derived)

    try:
        folder = archives.inspect_archive(path, archive_limits())
    except archives.ArchiveError as exc:
        raise ManifestError({"artifact": str(exc)}) from exc
    derived = {}
    if folder.config_pbtxt is not None:
        try:
            derived = schema_from_config(parse_config_pbtxt(folder.config_pbtxt))
        except ConfigError as exc:
            raise ManifestError({"artifact": str(exc)}) from exc
        # A labels file a config.pbtxt names is a model-level file we keep as is.
    return InspectedArtifact(folder.format, folder.version_files, folder.model_files, derived)


def get_or_create_model(name: str, actor: Actor, *, description: str = "", task_kind: str = "") -> Model:
    model = Model.objects.filter(name=name).first()
    if model is not None:
        return model
    try:
        return create_model(actor, name=name, description=description, task_kind=task_kind)
    except NameTaken:  # created meanwhile by a concurrent upload
        return Model.objects.get(name=name)


class _MovableFile(File):
    # FileSystemStorage moves (renames) a file that has a temporary path
    # instead of copying it: a 1 GiB upload is stored without a second pass.
    def temporary_file_path(self) -> str:
        return str(self.name)


def _serving_fields(backend, platform, max_batch_size, inputs, outputs, config) -> dict:
    return {
        "backend": backend,
        "platform": platform,
        "max_batch_size": max_batch_size,
        "inputs": [dict(t) for t in inputs],
        "outputs": [dict(t) for t in outputs],
        "config": config,
    }


def _existing_version(existing: ModelVersion, manifest: Manifest) -> Registration:
    """A retried upload gets its version back; the same bytes described
    differently are refused, not silently given the old schema."""
    registered = _serving_fields(
        existing.backend,
        existing.platform,
        existing.max_batch_size,
        [t.as_dict() for t in existing.inputs],
        [t.as_dict() for t in existing.outputs],
        existing.triton_config,
    )
    given = _serving_fields(
        manifest.backend, manifest.platform, manifest.max_batch_size, manifest.inputs, manifest.outputs, manifest.config
    )
    differing = [key for key in registered if registered[key] != given[key]]
    if differing:
        raise VersionConflict(
            f"these bytes are already registered as {existing} with a different {', '.join(differing)}; "
            "a changed schema needs a changed artifact (a new version)"
        )
    return Registration(existing, created=False)


def register_version(
    model: Model,
    artifact_path: str | Path,
    raw_manifest: dict,
    actor: Actor,
    *,
    sha256: str | None = None,
    size: int | None = None,
    consume: bool = False,
) -> Registration:
    """Register the artifact at `artifact_path` as a new version.

    Idempotent: the same bytes and manifest for the same model return the
    existing version; the same bytes with another schema raise VersionConflict.
    Raises ManifestError (with per-field errors) and leaves nothing behind.
    With `consume`, the file (an upload's temporary file) is moved into storage.
    """
    if sha256 is None or size is None:
        sha256, size = sha256_of(artifact_path)
    inspected = inspect_artifact(artifact_path, raw_manifest)
    manifest = parse_manifest(raw_manifest, inspected.derived)
    existing = ModelVersion.objects.filter(model=model, sha256=sha256).prefetch_related("tensors").first()
    if existing is not None:
        return _existing_version(existing, manifest)
    with _stored_artifact(model.name, artifact_path, inspected.format, sha256, consume=consume) as stored:
        registration = _store_version(model, stored.name, manifest, inspected, actor, sha256, size)
        stored.keep = registration.created
    return registration


class _StoredArtifact:
    name: str
    keep: bool = False  # set once the version row that names it is committed


@contextmanager
def _stored_artifact(model_name: str, artifact_path, artifact_format: str, sha256: str, *, consume: bool):
    """Store the artifact before any transaction, and remove it again unless `keep` is set.

    Storing can be a multi-GiB copy into a bucket: done inside the transaction, it would
    hold the model's row lock (every upload and alias move of the model) that long.
    """
    placeholder = ModelVersion(model=Model(name=model_name), sha256=sha256, artifact_format=artifact_format)
    field, storage = placeholder.artifact.field, placeholder.artifact.storage
    name = field.generate_filename(placeholder, "artifact")
    with (
        open(artifact_path, "rb") as fh,
        diskspace.saving(
            storage, name, store="artifact store", setting="MODELHUB_ARTIFACT_ROOT", max_length=field.max_length
        ),
    ):
        content = _MovableFile(fh, name=str(artifact_path)) if consume else File(fh)
        placeholder.artifact.save("artifact", content, save=False)
    stored = _StoredArtifact()
    stored.name = placeholder.artifact.name
    try:
        yield stored
    finally:
        if not stored.keep:  # refused, rolled back, or a concurrent upload registered these bytes first
            storage = ModelVersion._meta.get_field("artifact").storage
            try:
                storage.delete(stored.name)
            except OSError:  # the error being raised matters more; the stray file is logged
                log.exception("could not remove the artifact %s of a registration that did not happen", stored.name)


def _store_version(model, stored_name: str, manifest: Manifest, inspected, actor, sha256, size) -> Registration:
    """The version's rows, for an artifact stored as `stored_name` already."""
    with transaction.atomic():
        # The model row lock serialises concurrent uploads of one model: the
        # version number is the next never given out, and a retried upload
        # finds its twin here.
        locked = Model.objects.select_for_update().get(pk=model.pk)
        existing = ModelVersion.objects.filter(model=model, sha256=sha256).prefetch_related("tensors").first()
        if existing is not None:
            return _existing_version(existing, manifest)
        highest = model.versions.order_by("-number").values_list("number", flat=True).first() or 0
        last = max(locked.last_version_number, highest)
        Model.objects.filter(pk=model.pk).update(last_version_number=last + 1)
        version = ModelVersion(
            model=model,
            number=last + 1,
            artifact_format=inspected.format,
            sha256=sha256,
            size=size,
            version_files=inspected.version_files,
            model_files=inspected.model_files,
            backend=manifest.backend,
            platform=manifest.platform,
            max_batch_size=manifest.max_batch_size,
            triton_config=manifest.config,
            git_commit=manifest.git_commit,
            ci_run_url=manifest.ci_run_url,
            metadata=manifest.metadata,
            created_by=actor.django_user,
            artifact=stored_name,
        )
        version.save()
        TensorSpec.objects.bulk_create(
            TensorSpec(
                version=version,
                direction=direction,
                position=i,
                name=t["name"],
                datatype=t["datatype"],
                dims=t["dims"],
                labels=t.get("labels"),
            )
            for direction, tensors in (("input", manifest.inputs), ("output", manifest.outputs))
            for i, t in enumerate(tensors)
        )
        record(actor, "version.register", version, sha256=sha256, size=size)
        return Registration(version, created=True)


def move_alias(model: Model, alias: str, version: ModelVersion | None, actor: Actor, **audit) -> Alias | None:
    """Point `alias` at `version` (None drops it); every move is kept as a row.
    `audit` adds details to the move's audit row (a gated promotion's gate report)."""
    if version is not None and version.model_id != model.pk:
        raise ValueError(f"version {version} does not belong to model {model.name}")
    with transaction.atomic():
        # Lock the model row first, as uploads and delete_model do: taking the alias
        # row first would deadlock against a concurrent delete of the model.
        Model.objects.select_for_update(no_key=True).get(pk=model.pk)
        current = Alias.objects.select_for_update().filter(model=model, name=alias).first()
        previous = current.version if current else None
        if previous == version:
            return current
        if version is None:
            current.delete()
            result = None
        elif current is None:
            result = Alias(model=model, name=alias, version=version)
            result.full_clean()
            result.save()
        else:
            current.version = version
            fields = ["version", "updated_at"]
            if current.canary_version_id == version.pk:
                # The canary became the alias's version: it gets all the traffic, so no canary is left.
                current.canary_version, current.canary_weight = None, 0
                fields += ["canary_version", "canary_weight"]
            current.save(update_fields=fields)
            result = current
        AliasMove.objects.create(
            model=model, alias=alias, from_version=previous, to_version=version, moved_by=actor.label
        )
        record(
            actor,
            "alias.move" if version else "alias.delete",
            model,
            alias=alias,
            from_version=previous.number if previous else None,
            to_version=version.number if version else None,
            **audit,
        )
        return result


# --- canaries -----------------------------------------------------------------------------------
#
# One function per transition, each locking the model row then the alias row (move_alias's
# order) and writing its audit row in the same transaction. The gateway reads the result.


class CanaryConflict(Exception):
    """A canary transition the alias's state does not allow (none running, another one running)."""


CANARY_WEIGHTS = range(1, 100)


def _locked_alias(model: Model, alias: str) -> Alias:
    Model.objects.select_for_update(no_key=True).get(pk=model.pk)
    # of=self: the canary's outer join cannot be locked, and only the alias row needs to be.
    found = Alias.objects.select_for_update(of=("self",)).select_related("version", "canary_version")
    current = found.filter(model=model, name=alias).first()
    if current is None:
        raise Alias.DoesNotExist(f"model {model.name!r} has no alias {alias!r}")
    return current


def _check_weight(weight: int) -> None:
    if weight not in CANARY_WEIGHTS:
        raise ValidationError(
            {
                "weight": f"must be 1-99 (percent of the traffic the canary gets), not {weight}; "
                "0 is an abort, 100 a promotion"
            }
        )


def _running(current: Alias) -> Alias:
    if current.canary_version is None:
        raise CanaryConflict(f"{current} has no canary running")
    return current


def start_canary(model: Model, alias: str, version: ModelVersion, weight: int, actor: Actor) -> Alias:
    """Send `weight` percent of `alias`'s traffic to `version`, the rest staying on the alias's version."""
    _check_weight(weight)
    if version.model_id != model.pk:
        raise ValidationError({"version": f"version {version} does not belong to model {model.name}"})
    with transaction.atomic():
        current = _locked_alias(model, alias)
        if current.version_id == version.pk:
            raise ValidationError({"version": f"{current} already points at v{version.number}: pick another version"})
        if current.canary_version is not None:
            raise CanaryConflict(
                f"{current} already has a canary running (v{current.canary_version.number} at "
                f"{current.canary_weight} %): promote or abort it first"
            )
        current.canary_version, current.canary_weight = version, weight
        current.save(update_fields=["canary_version", "canary_weight", "updated_at"])
        record(
            actor,
            "alias.canary.start",
            model,
            alias=alias,
            version=current.version.number,
            canary_version=version.number,
            weight=weight,
        )
        return current


def set_canary_weight(model: Model, alias: str, weight: int, actor: Actor) -> Alias:
    """Change the share of the running canary."""
    _check_weight(weight)
    with transaction.atomic():
        current = _running(_locked_alias(model, alias))
        previous = current.canary_weight
        if previous == weight:
            return current
        current.canary_weight = weight
        current.save(update_fields=["canary_weight", "updated_at"])
        record(
            actor,
            "alias.canary.weight",
            model,
            alias=alias,
            canary_version=current.canary_version.number,
            from_weight=previous,
            weight=weight,
        )
        return current


def promote_canary(model: Model, alias: str, actor: Actor) -> Alias:
    """Move the alias to its canary (an AliasMove, as any move) and end the canary, at once."""
    with transaction.atomic():
        current = _running(_locked_alias(model, alias))
        canary, weight = current.canary_version, current.canary_weight
        record(
            actor,
            "alias.canary.promote",
            model,
            alias=alias,
            from_version=current.version.number,
            to_version=canary.number,
            weight=weight,
        )
        return move_alias(model, alias, canary, actor, canary_promoted_at_weight=weight)


def abort_canary(model: Model, alias: str, actor: Actor) -> Alias:
    """End the canary: all the alias's traffic goes back to its version."""
    with transaction.atomic():
        current = _running(_locked_alias(model, alias))
        canary, weight = current.canary_version, current.canary_weight
        current.canary_version, current.canary_weight = None, 0
        current.save(update_fields=["canary_version", "canary_weight", "updated_at"])
        record(
            actor,
            "alias.canary.abort",
            model,
            alias=alias,
            version=current.version.number,
            canary_version=canary.number,
            weight=weight,
        )
        return current


def create_model(actor: Actor, *, name: str, description: str = "", task_kind: str = TaskKind.OTHER) -> Model:
    """The one place a model is created; a taken name (even by a racing request) is NameTaken."""
    model = Model(name=name, description=description, task_kind=task_kind or TaskKind.OTHER)
    model.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            model.save()
            record(actor, "model.create", model)
    except IntegrityError:
        raise NameTaken(f"a model named {name!r} already exists") from None
    return model


def update_model(model: Model, actor: Actor, **changes) -> Model:
    """Change a model's description or task kind (its name is its Triton name: fixed)."""
    unknown = set(changes) - {"description", "task_kind"}
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a model")
    changed = sorted(k for k, v in changes.items() if getattr(model, k) != v)
    for key, value in changes.items():
        setattr(model, key, value)
    model.full_clean(validate_unique=False)
    if changes:
        with transaction.atomic():
            # Only the fields asked for: saving the whole row read at the start of the
            # request would undo whatever was written meanwhile to the others.
            model.save(update_fields=[*changes, "updated_at"])
            if changed:
                record(actor, "model.update", model, fields=changed)
    return model


VERSION_PROVENANCE_FIELDS = {"git_commit", "ci_run_url", "metadata"}


def update_version(version: ModelVersion, actor: Actor, **changes) -> ModelVersion:
    """Correct a version's provenance. Its bytes, schema and config are what deploys rely
    on: those never change (a changed schema is a new artifact, a new version)."""
    unknown = set(changes) - VERSION_PROVENANCE_FIELDS
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a version")
    changed = sorted(k for k, v in changes.items() if getattr(version, k) != v)
    for key, value in changes.items():
        setattr(version, key, value)
    version.clean_fields(exclude=[f.name for f in ModelVersion._meta.fields if f.name not in changes])
    if changes:
        with transaction.atomic():
            version.save(update_fields=list(changes))
            if changed:
                record(actor, "version.update", version, fields=changed)
    return version


def delete_model_rows(model: Model, actor: Actor) -> None:
    """Delete a model with its versions, aliases and history; its files go after commit.

    The registry does not know where versions run: the caller (serving's
    delete_model) refuses deployed models and removes their deployment rows first.
    """
    with transaction.atomic():
        # Row lock: a concurrent upload or alias move of this model waits for us.
        Model.objects.select_for_update().get(pk=model.pk)
        files = [name for name in model.versions.values_list("artifact", flat=True) if name]
        record(actor, "model.delete", model, versions=model.versions.count())
        Alias.objects.filter(model=model).delete()  # aliases protect their versions
        model.delete()
        _delete_files_on_commit(files)


def delete_version_rows(version: ModelVersion, actor: Actor) -> None:
    """Delete one version, its schema and (after commit) its file; refused (InUse) while
    an alias points at it. Where it runs is the caller's to check (serving's delete_version)."""
    with transaction.atomic():
        # The model row first, as uploads and alias moves lock it: no alias can move onto
        # this version between the check below and the delete.
        Model.objects.select_for_update().get(pk=version.model_id)
        aliases = list(Alias.objects.filter(version=version).order_by("name").values_list("name", flat=True))
        if aliases:
            raise InUse(
                f"{version} is behind the alias{'es' if len(aliases) > 1 else ''} {', '.join(aliases)}: "
                "move or drop the alias first"
            )
        canaries = list(Alias.objects.filter(canary_version=version).order_by("name").values_list("name", flat=True))
        if canaries:
            raise InUse(f"{version} is the canary of {', '.join(canaries)}: promote or abort the canary first")
        record(actor, "version.delete", version, sha256=version.sha256, size=version.size)
        name = version.artifact.name
        version.delete()
        _delete_files_on_commit([name] if name else [])


def _delete_files_on_commit(names: list[str]) -> None:
    """Remove stored artifacts, and a model's folder once it is empty, when the rows are gone for good."""
    storage = ModelVersion._meta.get_field("artifact").storage

    def delete() -> None:
        for name in names:
            try:
                storage.delete(name)
            except OSError:  # the rows are gone either way; a stray file is only disk space
                log.exception("could not delete the artifact %s", name)
        for folder in {posixpath.dirname(name) for name in names} - {""}:
            _remove_empty_folder(storage, folder)

    transaction.on_commit(delete)


def _remove_empty_folder(storage, folder: str) -> None:
    # Django's storage API cannot remove folders; only a local one exists to remove
    # (an object store has no folders), and rmdir refuses one a new upload just wrote to.
    try:
        path = storage.path(folder)
    except NotImplementedError:
        return
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            log.warning("could not remove the empty artifact folder %s: %s", path, exc)


def register_upload(
    name: str,
    artifact_path: str | Path,
    raw_manifest: dict,
    actor: Actor,
    *,
    create: bool,
    sha256: str | None = None,
    size: int | None = None,
    consume: bool = False,
) -> Registration:
    """Register an uploaded artifact as a version of the model called `name`.

    With `create`, a model that does not exist yet is created from the
    manifest's description and task_kind, but only once the artifact and the
    manifest have passed validation: a refused upload leaves no model behind.
    Without it, a missing model raises Model.DoesNotExist.
    """
    model = Model.objects.filter(name=name).first()
    if model is not None:
        return register_version(model, artifact_path, raw_manifest, actor, sha256=sha256, size=size, consume=consume)
    if not create:
        raise Model.DoesNotExist(f"model {name!r} not found")
    Model(name=name).clean_fields(exclude=["description", "task_kind"])
    if sha256 is None or size is None:
        sha256, size = sha256_of(artifact_path)
    inspected = inspect_artifact(artifact_path, raw_manifest)
    manifest = parse_manifest(raw_manifest, inspected.derived)
    with _stored_artifact(name, artifact_path, inspected.format, sha256, consume=consume) as stored:
        with transaction.atomic():
            model = get_or_create_model(name, actor, description=manifest.description, task_kind=manifest.task_kind)
            registration = _store_version(model, stored.name, manifest, inspected, actor, sha256, size)
        stored.keep = registration.created
    return registration
