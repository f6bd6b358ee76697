"""Tie each audit row to the registry model it concerns, so that a token restricted
to some models reads only their rows; old rows are filled in from their objects."""

from django.db import migrations, models

BATCH = 2000


def _model_ids_of(apps, object_type: str, ids: list[int]) -> dict[int, int]:
    """{object id: registry model id} for the objects of one type that still exist."""
    if object_type == "registry.model":
        return {
            i: i for i in apps.get_model("registry", "Model").objects.filter(pk__in=ids).values_list("pk", flat=True)
        }
    paths = {
        "registry.modelversion": ("registry", "ModelVersion", "model_id"),
        "registry.alias": ("registry", "Alias", "model_id"),
        "registry.aliasmove": ("registry", "AliasMove", "model_id"),
        "registry.tensorspec": ("registry", "TensorSpec", "version__model_id"),
        "serving.deployment": ("serving", "Deployment", "version__model_id"),
    }
    if object_type not in paths:
        return {}
    app, name, path = paths[object_type]
    return dict(apps.get_model(app, name).objects.filter(pk__in=ids).values_list("pk", path))


def backfill(apps, schema_editor):
    AuditEvent = apps.get_model("audit", "AuditEvent")
    names = dict(apps.get_model("registry", "Model").objects.values_list("pk", "name"))
    last = 0
    while True:
        rows = list(AuditEvent.objects.filter(pk__gt=last).order_by("pk")[:BATCH])
        if not rows:
            return
        last = rows[-1].pk
        by_type: dict[str, list[int]] = {}
        for row in rows:
            if row.object_id.isdigit():
                by_type.setdefault(row.object_type, []).append(int(row.object_id))
        found = {(t, i): m for t, ids in by_type.items() for i, m in _model_ids_of(apps, t, ids).items()}
        for row in rows:
            model_id = found.get((row.object_type, int(row.object_id))) if row.object_id.isdigit() else None
            if model_id is not None:
                row.model_id, row.model_name = model_id, names.get(model_id, "")
            elif row.object_type == "registry.model" and row.object_id.isdigit():
                # A deleted model: its id is the object's, its name was the object's repr.
                row.model_id, row.model_name = int(row.object_id), row.object_repr[:100]
            elif isinstance((row.details or {}).get("model"), str):
                row.model_name = row.details["model"][:100]  # a load or unload on a server names the model
        AuditEvent.objects.bulk_update(rows, ["model_id", "model_name"])


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        # The backfill reads these apps' rows; the audit code itself never imports them.
        ("registry", "0001_initial"),
        ("serving", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="model_id",
            field=models.BigIntegerField(
                blank=True, db_index=True, help_text="the registry model concerned", null=True
            ),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="model_name",
            field=models.CharField(blank=True, db_index=True, help_text="its name at the time", max_length=100),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
