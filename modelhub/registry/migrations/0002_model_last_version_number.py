from django.db import migrations, models
from django.db.models import Max


def fill_from_versions(apps, schema_editor):
    Model = apps.get_model("registry", "Model")
    for model in Model.objects.annotate(highest=Max("versions__number")).exclude(highest=None).iterator():
        Model.objects.filter(pk=model.pk).update(last_version_number=model.highest)


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="model",
            name="last_version_number",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(fill_from_versions, migrations.RunPython.noop),
    ]
