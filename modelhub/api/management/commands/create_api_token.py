"""Create an API token and print it (once: only its hash is kept).

    python manage.py create_api_token --user alice --scopes read,upload,deploy \
        --models digits --expires-in-days 90 --name ci-main

The token is the only thing written to stdout, so a script can capture it:
TOKEN=$(python manage.py create_api_token …).
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from modelhub.access.roles import ROLES_SUMMARY, role_scopes
from modelhub.api.models import SCOPE_IMPLIES, Scope
from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.registry.models import Model


class Command(BaseCommand):
    help = "Create an API token for CI and print it once."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="Username the token acts for")
        parser.add_argument("--name", required=True, help="What uses the token, e.g. ci-main")
        parser.add_argument(
            "--scopes", default="read", help=f"Comma-separated, of {', '.join(Scope.values)} (default: read)"
        )
        parser.add_argument("--models", default="", help="Comma-separated model names to restrict the token to")
        parser.add_argument(
            "--expires-in-days", type=int, default=90, help="Lifetime in days (default 90; 0: never expires)"
        )

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"no user {options['user']!r}")
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        unknown = sorted(set(scopes) - set(Scope.values))
        if unknown or not scopes:
            raise CommandError(f"unknown or no scopes {unknown}; use some of {', '.join(Scope.values)}")
        # A token never does more than its user's role allows (checked on every use):
        # issuing scopes the role lacks would hand out a token that fails later.
        lacking = sorted(s for s in scopes if not SCOPE_IMPLIES[s] <= role_scopes(user))
        if lacking:
            raise CommandError(
                f"user {user.get_username()!r} may not use the scope(s) {', '.join(lacking)} "
                f"({ROLES_SUMMARY}); give the user a role first"
            )
        names = [n.strip() for n in options["models"].split(",") if n.strip()]
        models = list(Model.objects.filter(name__in=names))
        missing = sorted(set(names) - {m.name for m in models})
        if missing:
            raise CommandError(f"no model(s) {', '.join(missing)}")
        days = options["expires_in_days"]
        if days < 0:
            raise CommandError("--expires-in-days must be 0 (never) or more")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        token, text = issue_token(
            name=options["name"],
            user=user,
            scopes=scopes,
            models=models,
            expires_at=expires_at,
            actor=Actor(source=Source.CLI),
        )
        when = f"expires {expires_at:%Y-%m-%d}" if expires_at else "never expires"
        restricted = f", models {', '.join(sorted(names))}" if names else ""
        self.stderr.write(
            f"Token {token.name!r} for {user.get_username()}: scopes {', '.join(token.scopes)}{restricted}; {when}. "
            "It is shown once:"
        )
        self.stdout.write(text)
