from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.audit.models import Source
from modelhub.serving.models import InferenceServer


class Command(BaseCommand):
    help = "Register (or update) a Triton server by name."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--url", required=True, help="Triton's HTTP endpoint, e.g. http://127.0.0.1:8000")
        parser.add_argument("--metrics-url", default="")
        parser.add_argument("--labels", default="", help="comma-separated, e.g. staging,cpu")
        parser.add_argument("--backends", default="", help="comma-separated backends it has, e.g. python")

    def handle(self, *args, **opts):
        split = lambda value: [v.strip() for v in value.split(",") if v.strip()]  # noqa: E731
        fields = {
            "base_url": opts["url"],
            "metrics_url": opts["metrics_url"],
            "labels": split(opts["labels"]),
            "backends": split(opts["backends"]),
            "enabled": True,
        }
        with transaction.atomic():
            server = InferenceServer.objects.filter(name=opts["name"]).first() or InferenceServer(name=opts["name"])
            created = server.pk is None
            for key, value in fields.items():
                setattr(server, key, value)
            try:
                server.full_clean()
            except ValidationError as exc:
                raise CommandError(f"server {opts['name']!r}: {exc.message_dict}") from exc
            server.save()
            record(Actor(source=Source.CLI), "inferenceserver.create" if created else "inferenceserver.update", server)
        self.stdout.write(f"{'registered' if created else 'updated'} server {server.name} at {server.base_url}")
