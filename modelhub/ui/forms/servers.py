"""The server form: the REST API's field rules (`api.serializers.ServerSerializer`),
with labels and backends typed as comma-separated words.

The form only validates; `serving.services.create_server / update_server` write
(and run the model's own validators once more, whose errors the view puts back here).
"""

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from modelhub.api.fields import HTTP_URL, NO_NUL
from modelhub.lib.urls import CREDENTIALS_REFUSED, has_credentials, hide_credentials
from modelhub.serving.models import InferenceServer, server_name_validator, validate_absolute_path

URL_MESSAGE = "must be an http:// or https:// URL with a host name"  # the API's words
http_url_validator = RegexValidator(HTTP_URL, URL_MESSAGE)

# The API's limits on labels and backends (ServerSerializer).
MAX_WORDS = 50
MAX_WORD_LENGTH = 100


def _help(field: str) -> str:
    return InferenceServer._meta.get_field(field).help_text


class WordListField(forms.CharField):
    """A list of short strings, typed as "staging, gpu"; an empty box is an empty list."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value) -> list[str]:
        if isinstance(value, list):
            return value
        words = [w.strip() for w in (value or "").split(",")]
        return list(dict.fromkeys(w for w in words if w))  # duplicates once, in the order typed

    def validate(self, value: list[str]) -> None:
        if len(value) > MAX_WORDS:
            raise ValidationError(f"at most {MAX_WORDS} entries, not {len(value)}")
        for word in value:
            if len(word) > MAX_WORD_LENGTH:
                raise ValidationError(f"{word[:20]!r}… is longer than {MAX_WORD_LENGTH} characters")
            NO_NUL(word)

    def run_validators(self, value) -> None:
        pass  # CharField's length validators would measure the list, not its words: validate() does it


class HttpUrlField(forms.CharField):
    """An http(s) URL by the API's rule, without credentials. A URL registered with credentials
    before they were refused is shown masked; sent back so, the refusal names the field."""

    def __init__(self, **kwargs):
        super().__init__(max_length=200, validators=[http_url_validator], strip=False, **kwargs)
        self.kept: tuple[str, str] | None = None  # (masked, as registered)

    def clean(self, value):
        if self.kept and value == self.kept[0]:
            return self.kept[1]  # the model's validation then refuses the credentials, masked
        if has_credentials(value or ""):
            raise ValidationError(CREDENTIALS_REFUSED)
        return super().clean(value)


class ServerForm(forms.Form):
    name = forms.CharField(max_length=100, validators=[server_name_validator], strip=False)
    base_url = HttpUrlField(label="Base URL", help_text=_help("base_url"))
    metrics_url = HttpUrlField(label="Metrics URL", required=False, help_text=_help("metrics_url"))
    enabled = forms.BooleanField(required=False, initial=True, help_text="A disabled server gets no new deploys")
    labels = WordListField(required=False, help_text="Comma-separated, e.g. staging, gpu: deploy to all with a label")
    backends = WordListField(
        required=False, help_text="Comma-separated, e.g. python, onnxruntime. " + _help("backends")
    )
    model_repository = forms.CharField(
        label="Model repository",
        max_length=500,
        required=False,
        validators=[validate_absolute_path],
        help_text=_help("model_repository"),
        strip=False,
    )

    @classmethod
    def for_server(cls, server: InferenceServer, data=None) -> "ServerForm":
        initial = {name: getattr(server, name) for name in cls.base_fields}
        form = cls(data, initial=initial)
        for name in ("base_url", "metrics_url"):
            masked = hide_credentials(initial[name])
            if masked != initial[name]:
                form.fields[name].kept = (masked, initial[name])
                form.initial[name] = masked
        return form

    def changes(self, server: InferenceServer) -> dict:
        """The cleaned fields whose value differs from `server`'s: an edit writes only these."""
        return {k: v for k, v in self.cleaned_data.items() if getattr(server, k) != v}

    def add_service_error(self, exc: ValidationError) -> None:
        """Put a model validation error from the service on the field it names."""
        if hasattr(exc, "error_dict"):
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        else:
            self.add_error(None, exc.messages)
