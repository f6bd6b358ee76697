"""Give a person a role (viewer, operator or admin), creating the account if needed.

    python manage.py set_role ann operator [--email ann@example.com]

A new account gets a random password, printed once. The role replaces the person's
other role groups: one person, one role.
"""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from modelhub.access.roles import ROLES, ROLES_SUMMARY


class Command(BaseCommand):
    help = f"Give a person a role, creating the account if needed ({ROLES_SUMMARY})."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("role", help=f"one of {', '.join(ROLES)}")
        parser.add_argument("--email", default="", help="where their alert emails go")

    def handle(self, *args, username, role, email, **opts):
        if role not in ROLES:
            raise CommandError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(username=username).first()
            password = None
            if user is None:
                password = secrets.token_urlsafe(12)
                user = User.objects.create_user(username, email=email, password=password)
            elif email:
                user.email = email
                user.save(update_fields=["email"])
            user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(name=role))
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        self.stdout.write(f"{username} is now {role}")
        if password:
            self.stdout.write(f"login: {username} / {password}  (shown once; change it after signing in)")
