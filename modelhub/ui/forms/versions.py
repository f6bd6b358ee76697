"""Forms of the version page: deploy, undeploy, and the version to compare with.

Servers are named as the REST API names them, and refused with its words ("unknown
server 'x'", "server 'x' is disabled"); whether a server can serve the version's
backend is the deploy service's own check (BackendMissing), not repeated here.
"""

from django import forms

from modelhub.registry.models import ModelVersion
from modelhub.serving.models import InferenceServer


def _server_named(name: str) -> InferenceServer:
    server = InferenceServer.objects.filter(name=name).first()
    if server is None:
        raise forms.ValidationError(f"unknown server {name!r}")
    return server


class ServerNamesField(forms.MultipleChoiceField):
    """Server names from a multi-select. Any name passes here, so that clean_servers
    can say which one is unknown or disabled instead of Django's generic choice error."""

    def valid_value(self, value) -> bool:
        return True


class DeployForm(forms.Form):
    servers = ServerNamesField(widget=forms.SelectMultiple, error_messages={"required": "choose at least one server"})

    def clean_servers(self) -> list[InferenceServer]:
        names = list(dict.fromkeys(self.cleaned_data["servers"]))
        found = {s.name: s for s in InferenceServer.objects.filter(name__in=names)}
        problems = []
        for name in names:
            if name not in found:
                problems.append(f"unknown server {name!r}")
            elif not found[name].enabled:
                problems.append(f"server {name!r} is disabled")
        if problems:
            raise forms.ValidationError("; ".join(problems))
        return [found[name] for name in names]


class UndeployForm(forms.Form):
    # Disabled servers may be undeployed from (as in the API): only deploys need a live target.
    server = forms.CharField(max_length=100, error_messages={"required": "name the server to undeploy from"})

    def clean_server(self) -> InferenceServer:
        return _server_named(self.cleaned_data["server"])


def other_version(version: ModelVersion, raw: str | None) -> ModelVersion:
    """The version named by `?with=` to compare `version` with; ValueError says what is wrong."""
    if not raw or not raw.strip().isdigit() or len(raw.strip()) > 9:
        raise ValueError(f"'with' must be a version number of {version.model.name}, not {raw!r}")
    number = int(raw)
    if number == version.number:
        raise ValueError(f"choose a version other than v{number} to compare it with")
    other = ModelVersion.objects.filter(model_id=version.model_id, number=number).first()
    if other is None:
        raise ValueError(f"model {version.model.name!r} has no version {number}")
    return other
