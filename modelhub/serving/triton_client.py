"""ModelHub's only client of Triton's HTTP API.

Everything that talks to a Triton server goes through TritonClient. Each call
has a timeout (a load can hang for ever when a backend stub cannot start) and
every failure becomes a TritonError whose message says which server, which
call and what Triton said, ready to be stored and shown to an operator.
"""

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import gevent
import numpy as np
import tritonclient.http as triton_http
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException


class TritonError(Exception):
    """A Triton call failed. `status` is Triton's HTTP status where it answered."""

    def __init__(self, server: str, call: str, detail: str, status: str | None = None):
        self.server, self.call, self.detail, self.status = server, call, detail, status
        super().__init__(f"Triton server {server!r}: {call} failed: {detail}")


class TritonUnavailable(TritonError):
    """The server did not answer at all (refused, unreachable, timed out)."""


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool


def _hostport(base_url: str) -> tuple[str, bool]:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{base_url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}", parts.scheme == "https"


class TritonClient:
    def __init__(
        self,
        server_name: str,
        base_url: str,
        metrics_url: str = "",
        *,
        timeout: float | None = None,
        load_timeout: float | None = None,
    ):
        self.server_name = server_name
        self.base_url = base_url
        self.metrics_url = metrics_url
        self.timeout = timeout if timeout is not None else settings.TRITON_TIMEOUT_S
        self.load_timeout = load_timeout if load_timeout is not None else settings.TRITON_LOAD_TIMEOUT_S
        self._hostport, self._ssl = _hostport(base_url)
        self._clients: dict[float, triton_http.InferenceServerClient] = {}

    @classmethod
    def for_server(cls, server, **kwargs) -> "TritonClient":
        return cls(server.name, server.base_url, server.metrics_url, **kwargs)

    def _client(self, timeout: float) -> triton_http.InferenceServerClient:
        # tritonclient fixes timeouts per client object: keep one per timeout.
        if timeout not in self._clients:
            self._clients[timeout] = triton_http.InferenceServerClient(
                self._hostport, connection_timeout=timeout, network_timeout=timeout, ssl=self._ssl
            )
        return self._clients[timeout]

    def _call(self, call: str, fn, *args, timeout: float | None = None, **kwargs):
        timeout = timeout or self.timeout
        try:
            # gevent.Timeout bounds the whole call, not just each socket read.
            with gevent.Timeout(timeout + 1, TimeoutError(f"no answer within {timeout:g} s")):
                return fn(self._client(timeout), *args, **kwargs)
        except InferenceServerException as exc:
            raise TritonError(self.server_name, call, exc.message() or str(exc), exc.status()) from exc
        except (OSError, TimeoutError, gevent.Timeout) as exc:
            self._clients.pop(timeout, None)  # its connection pool may hold a dead socket
            detail = str(exc) or type(exc).__name__
            if isinstance(exc, (TimeoutError, gevent.Timeout)) or "timed out" in detail:
                detail = f"no answer within {timeout:g} s ({detail})"
            raise TritonUnavailable(self.server_name, call, f"{self.base_url}: {detail}") from exc

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # --- health and metadata -------------------------------------------------

    def health(self) -> Health:
        live = self._call("health (live)", lambda c: c.is_server_live())
        ready = self._call("health (ready)", lambda c: c.is_server_ready())
        return Health(live=bool(live), ready=bool(ready))

    def server_metadata(self) -> dict:
        return self._call("server metadata", lambda c: c.get_server_metadata())

    def model_ready(self, model: str, version: int | None = None) -> bool:
        return self._call(f"model ready ({model})", lambda c: c.is_model_ready(model, str(version) if version else ""))

    def model_metadata(self, model: str, version: int | None = None) -> dict:
        return self._call(
            f"model metadata ({model})", lambda c: c.get_model_metadata(model, str(version) if version else "")
        )

    def model_config(self, model: str) -> dict:
        return self._call(f"model config ({model})", lambda c: c.get_model_config(model))

    def served_versions(self, model: str) -> set[int]:
        """Versions of `model` Triton serves now (empty if the model is not loaded)."""
        try:
            metadata = self.model_metadata(model)
        except TritonUnavailable:
            raise
        except TritonError:
            return set()  # Triton answers 400 "unknown model" / "not ready"
        versions = {int(v) for v in metadata.get("versions", [])}
        return {v for v in versions if self.model_ready(model, v)}

    def repository_index(self) -> list[dict]:
        return self._call("repository index", lambda c: c.get_model_repository_index())

    # --- repository API ------------------------------------------------------

    def load(self, model: str, config: Mapping, files: Mapping[str, bytes]) -> None:
        """Load (or reload) `model` from a config and file overrides.

        `files` maps paths inside the model folder ("1/model.py", "labels.txt")
        to bytes; they travel in the request, so Triton needs no shared disk.
        """
        self._call(
            f"load ({model})",
            lambda c: c.load_model(
                model, config=json.dumps(config), files={f"file:{path}": data for path, data in files.items()}
            ),
            timeout=self.load_timeout,
        )

    def unload(self, model: str) -> None:
        self._call(f"unload ({model})", lambda c: c.unload_model(model), timeout=self.load_timeout)

    def statistics(self, model: str = "") -> dict:
        return self._call(f"statistics ({model or 'all models'})", lambda c: c.get_inference_statistics(model))

    # --- inference -----------------------------------------------------------

    def infer(self, model: str, version: int | None, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str]):
        """Run one inference; returns {output name: numpy array}. Inputs are
        sent as binary tensor data (Triton's binary extension)."""
        tensors = []
        for name, array in inputs.items():
            tensor = triton_http.InferInput(name, list(array.shape), datatypes[name])
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        result = self._call(
            f"infer ({model})", lambda c: c.infer(model, tensors, model_version=str(version) if version else "")
        )
        return {out["name"]: result.as_numpy(out["name"]) for out in result.get_response()["outputs"]}

    # --- metrics -------------------------------------------------------------

    def scrape_metrics(self) -> list:
        """Triton's Prometheus metrics, parsed into prometheus_client metric families."""
        if not self.metrics_url:
            raise TritonError(self.server_name, "metrics scrape", "the server has no metrics URL configured")
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=self.timeout) as response:
                text = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            raise TritonError(self.server_name, "metrics scrape", f"HTTP {exc.code} from {self.metrics_url}") from exc
        except (OSError, urllib.error.URLError) as exc:
            raise TritonUnavailable(self.server_name, "metrics scrape", f"{self.metrics_url}: {exc}") from exc
        try:
            return list(text_string_to_metric_families(text))
        except ValueError as exc:
            raise TritonError(self.server_name, "metrics scrape", f"unparseable metrics: {exc}") from exc
