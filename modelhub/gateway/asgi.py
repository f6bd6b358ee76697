"""Entry point for ASGI servers: Django set up first, then the gateway app.

uvicorn --factory modelhub.gateway.asgi:create_app --loop uvloop --http httptools
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")
django.setup()

from .app import create_app  # noqa: E402 - needs the app registry ready

__all__ = ["create_app"]
