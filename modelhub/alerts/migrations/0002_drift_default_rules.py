from django.db import migrations

from modelhub.alerts.defaults import create_default_rules


class Migration(migrations.Migration):
    """The drift rules joined the defaults: written where missing (existing rules are left as they are)."""

    dependencies = [
        ("alerts", "0001_initial"),
        ("monitoring", "0002_drift"),
    ]

    operations = [migrations.RunPython(create_default_rules, migrations.RunPython.noop)]
