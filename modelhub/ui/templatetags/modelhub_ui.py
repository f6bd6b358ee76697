"""Template filters of the operator UI."""

from django import template

from modelhub.lib.urls import hide_credentials as _hide_credentials

register = template.Library()


@register.filter
def hide_credentials(text) -> str:
    """A URL or an error text naming one, without a user:password@ (errors stored before
    TritonClient stopped naming them still hold them)."""
    return _hide_credentials(str(text) if text is not None else "")
