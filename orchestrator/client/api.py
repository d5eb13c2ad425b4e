"""The orchestrator's HTTP JSON API as the CLI sees it: paths, requests, error translation.

:class:`ApiClient` wraps an :class:`httpx.Client` and takes its transport as httpx does, so
the unit tests answer requests with an :class:`httpx.MockTransport` instead of a server.
Transport failures become :class:`UnreachableError`, HTTP errors :class:`ApiError`, each
with the one-line message the user sees.
"""
from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx

from dockyard import __version__
from orchestrator.client.errors import ApiError, CliError, UnreachableError, error_lines

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_CLUSTER = "default"
TIMEOUT = 30.0


def default_token_file() -> Path | None:
    """$XDG_CONFIG_HOME/dockyard/token (~/.config/dockyard/token): where the orchestrator's first start writes the
    admin token it makes, and where the CLI looks when neither --token nor DOCKYARD_TOKEN is given. None for a
    user without a home (a systemd DynamicUser)."""
    try:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    except RuntimeError:  # "Could not determine home directory"
        return None
    return base / "dockyard" / "token"


def find_token(token: str | None) -> str | None:
    """--token / DOCKYARD_TOKEN, else the file DOCKYARD_TOKEN_FILE or :func:`default_token_file` if readable."""
    if token:
        return token.strip()
    env_file = os.environ.get("DOCKYARD_TOKEN_FILE")
    path = Path(env_file) if env_file else default_token_file()
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def verify_context(ca: str | None) -> ssl.SSLContext:
    """TLS verification for an https:// API: against ``ca`` (a PEM file) or the system's CAs."""
    try:
        return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    except (OSError, ssl.SSLError) as e:
        raise CliError(f"--ca {ca}: cannot load it as a CA certificate: {e}") from None


def normalise_server(url: str) -> str:
    """``host:port`` alone means ``http://host:port``; no trailing slash."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def seg(value: Any) -> str:
    """One URL path segment (``family:revision`` keeps its colon)."""
    return quote(str(value), safe=":")


def unwrap(data: Any, key: str) -> dict[str, Any]:
    """Object responses may be ``{"service": {...}}`` or the bare object; accept both."""
    if isinstance(data, dict) and isinstance(data.get(key), dict):
        return data[key]
    return data if isinstance(data, dict) else {}


class ApiClient:
    """The API at ``server``, working on ``cluster`` (which ``-c`` after a subcommand may change).

    The httpx client is created on the first request, so commands that never call the API
    (``--help``, the daemons) pay nothing for it.
    """

    def __init__(self, server: str, cluster: str, transport: httpx.BaseTransport | None = None,
                 timeout: float = TIMEOUT, token: str | None = None, ca: str | None = None) -> None:
        self.server = normalise_server(server)
        self.token = token
        self.ca = ca  # an https:// server's certificate must be signed by this CA (default: the system's)
        self.cluster = cluster
        self.timeout = timeout
        self._transport = transport
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.server,
                timeout=self.timeout,
                transport=self._transport,
                verify=verify_context(self.ca),
                headers={"User-Agent": f"dockyard-cli/{__version__}", "Accept": "application/json",
                         **({"Authorization": f"Bearer {self.token}"} if self.token else {})},
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cpath(self, *parts: Any) -> str:
        """``/v1/clusters/<cluster>/<parts...>``."""
        return "/".join(["/v1/clusters", seg(self.cluster), *(seg(p) for p in parts)])

    def request(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self.client.request(method, path, params=params or None, json=body)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise CliError(f"invalid server URL {self.server!r}: {e} (use e.g. --server http://127.0.0.1:8080)") from None
        except httpx.ConnectError as e:
            if "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate verify failed" in str(e):
                raise CliError(f"the dockyard API at {self.server} has a certificate this CLI does not trust: {e}",
                               "give the CA that signed it: --ca FILE (or DOCKYARD_CA, or dockyard login --ca)") from None
            raise UnreachableError(
                f"cannot reach the dockyard API at {self.server} "
                "(is the orchestrator running? start it with: dockyard orchestrator)"
            ) from None
        except httpx.TimeoutException:
            raise UnreachableError(f"the dockyard API at {self.server} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as e:
            raise UnreachableError(f"request to the dockyard API at {self.server} failed: {e or type(e).__name__}") from None
        try:
            data = resp.json() if resp.content else {}
        except ValueError:
            data = None
        if resp.is_error:
            raise ApiError(resp.status_code, *error_lines(resp.status_code, data, resp.text))
        if data is None:
            raise CliError(f"the API at {self.server} answered {method} {path} with something that is not JSON")
        return data

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, params=params, body=body if body is not None else {})

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)
