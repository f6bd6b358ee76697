"""Request fields that accept exactly what the OpenAPI schema says they accept.

DRF is lenient by default ("5" for an integer, 1 for a boolean, 0 for a
string). A client written against the schema never needs that, and a schema
that says one thing while the server accepts another is a schema violation
(schemathesis checks both directions), so request bodies use these fields.
"""

import re
from urllib.parse import urlsplit

from django.core.validators import RegexValidator
from rest_framework import serializers

from modelhub.lib.urls import CREDENTIALS_REFUSED, has_credentials, hide_credentials

# Postgres text and jsonb cannot hold NUL: say so in the schema instead of failing later.
# One or more characters: DRF checks blank apart, and drf-spectacular documents an allowed
# blank as a separate oneOf branch, which a pattern that also matched "" would make ambiguous.
NO_NUL = RegexValidator(r"^[^\x00]+$", "must not contain NUL characters")
NO_NUL_PARAMETER = r"^[^\x00]*$"

_HOST = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
HTTP_URL = rf"^https?://{_HOST}(:{_PORT})?(/[^\x00-\x20\x7f]*)?$"


class Text(serializers.CharField):
    """A string: numbers are not turned into strings, NUL is refused."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)  # " a" is not "a": the schema's pattern says so
        super().__init__(**kwargs)
        if not any(isinstance(v, RegexValidator) for v in self.validators):
            self.validators.append(NO_NUL)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class HttpUrl(Text):
    """An http(s) URL with a host name or IPv4 address, as TritonClient needs."""

    def __init__(self, *, allow_blank: bool = False, **kwargs):
        kwargs.setdefault("max_length", 200)
        # Blank, where allowed, is accepted before validators run (and documented apart).
        kwargs["validators"] = [RegexValidator(HTTP_URL, "must be an http:// or https:// URL with a host name")]
        super().__init__(allow_blank=allow_blank, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value and has_credentials(value):  # before the pattern, which refuses them with a vaguer reason
            raise serializers.ValidationError(CREDENTIALS_REFUSED)
        if value and not re.fullmatch(HTTP_URL, value):
            raise serializers.ValidationError("must be an http:// or https:// URL with a host name")
        if value:
            try:
                urlsplit(value).port  # noqa: B018  (raises on a port out of range)
            except ValueError as exc:
                raise serializers.ValidationError(f"not a usable URL: {exc}") from None
        return value

    def to_representation(self, value):
        # A URL registered with credentials before they were refused: readers see it masked.
        return hide_credentials(super().to_representation(value))


class StrictBoolean(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictInteger(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloat(serializers.FloatField):
    """A number: true and false are not 1.0 and 0.0."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class Name(serializers.SlugRelatedField):
    """Another object named by its `slug_field`. A name Postgres cannot hold (NUL)
    is not found, like any other unknown name, rather than failing the lookup. An
    empty name is not a name (DRF would read it as null): null says "none"."""

    def run_validation(self, data=serializers.empty):
        if data == "":
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().run_validation(data)

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data.replace("\x00", "\\x00"))
        return super().to_internal_value(data)
