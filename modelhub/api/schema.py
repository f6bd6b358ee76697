"""OpenAPI details drf-spectacular cannot guess: the token scheme and the error responses."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from modelhub.api.fields import NO_NUL_PARAMETER


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "modelhub.api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "mh_<prefix>_<secret>",
            "description": "An API token (admin, or `python manage.py create_api_token`).",
        }


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What went wrong, in one line")
    code = serializers.CharField(help_text="Stable, for programs: invalid, not_found, conflict, too_large, …")
    fields = serializers.DictField(
        child=serializers.CharField(), help_text="Field path -> problem, e.g. manifest.inputs[0].datatype"
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


_ERRORS = {
    "400": "Invalid request; `error.fields` names the fields at fault",
    "401": "No credentials, or an unknown, expired or revoked token",
    "403": "Authenticated, but the token's scopes or the user's role do not allow this",
    "404": "No such object, or outside what this token may see",
    "409": "Conflicts with the current state (name taken, model still deployed, …)",
    "411": "An upload sent without a Content-Length (chunked): send the length",
    "415": "Unsupported request content type",
    "503": "The database is busy (a lock outlasted its timeout): retry after `Retry-After` seconds; or (code "
    "`task_queue_unavailable`) the write is recorded but its task could not be queued: the periodic pass does it",
    "413": "Request body too large; or (code `storage_full`) a disk is full: the message names the store "
    "(artifact store or upload temporary folder) and its setting; nothing was kept",
}


class ModelHubAutoSchema(AutoSchema):
    """Documents the error responses every operation can give, in the one error shape."""

    def _get_parameters(self):
        parameters = super()._get_parameters()
        for parameter in parameters:
            schema = parameter.get("schema", {})
            # Free-text filters reach Postgres, which refuses NUL: say so. (ordering has its
            # own pattern: unknown fields are refused with 400.)
            if (
                parameter.get("in") == "query"
                and parameter["name"] != "ordering"
                and schema.get("type") == "string"
                and not ({"enum", "format", "pattern"} & set(schema))
            ):
                schema["pattern"] = NO_NUL_PARAMETER
        return parameters

    def get_tags(self) -> list[str]:
        tag = getattr(self.view, "openapi_tag", None)
        return [tag] if tag else super().get_tags()

    def _error_codes(self) -> list[str]:
        codes = ["401", "403"]
        if "{" in self.path:
            codes.append("404")
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["400", "413", "415"]
        elif self.method == "GET" and self._is_list_view():
            codes.append("400")  # bad filter or paging values
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            codes += ["409", "503"]
        if self.method == "POST" and self.path.endswith("/versions/"):
            codes.append("411")
        return codes

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = _ERRORS[code]
                responses[code] = response
        return dict(sorted(responses.items()))
