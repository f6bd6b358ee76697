from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.serving.models import InferenceServer
from modelhub.serving.services import create_server, update_server


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


class Command(BaseCommand):
    help = "Register (or update) a Triton server by name."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--url", required=True, help="Triton's HTTP endpoint, e.g. http://127.0.0.1:8000")
        parser.add_argument("--metrics-url", default="")
        parser.add_argument("--labels", default="", help="comma-separated, e.g. staging,cpu")
        parser.add_argument("--backends", default="", help="comma-separated backends it has, e.g. python")
        parser.add_argument(
            "--model-repository",
            default="",
            help="absolute path of a folder the workers can write that this Triton reads as its --model-repository "
            "(same host or a shared volume): Triton then reads the model files from there instead of receiving "
            "them inside each load request; empty (default): files travel in the request",
        )

    def handle(self, *args, **opts):
        actor = Actor(source=Source.CLI)
        fields = {
            "base_url": opts["url"],
            "metrics_url": opts["metrics_url"],
            "labels": _split(opts["labels"]),
            "backends": _split(opts["backends"]),
            "model_repository": opts["model_repository"],
            "enabled": True,
        }
        server = InferenceServer.objects.filter(name=opts["name"]).first()
        try:
            if server is None:
                server = create_server(actor, name=opts["name"], **fields)
                verb = "registered"
            else:
                server = update_server(server, actor, **fields)
                verb = "updated"
        except ValidationError as exc:
            raise CommandError(f"server {opts['name']!r}: {exc.message_dict}") from exc
        self.stdout.write(f"{verb} server {server.name} at {server.base_url}")
