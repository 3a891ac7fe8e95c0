"""The httpx seam: each thing the SPKI pin relies on holds on the installed httpx and httpcore, a
change is named at start, and the pin works through httpx on a real loopback TLS connection.

The "changed" cases break httpx or httpcore for one test (monkeypatch, undone afterwards), the
way an upgrade could; the check must name what went.
"""

from __future__ import annotations

import ast
import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from httpcore._backends import sync as httpcore_sync
from httpcore._exceptions import map_exceptions
from httpx._transports import default as httpx_default

from gateway import devpki
from gateway.errors import IncompatibleHttpx
from gateway.forward import httpx_seam as seam
from gateway.forward.classify import classify_error

Breaker = Callable[[pytest.MonkeyPatch], None]


def _copied_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    """An httpx that builds its own context from the one given (and loses the subclass)."""
    return ssl.create_default_context()


def _start_tls_without_sni(
    self: Any, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: Any = None
) -> Any:
    """An httpcore that no longer names the server (SNI, host name check) when it starts TLS."""
    with map_exceptions({OSError: httpcore.ConnectError}):
        try:
            return httpcore_sync.SyncStream(ssl_context.wrap_socket(self._sock))
        except ssl.SSLError:
            self.close()
            raise


@contextlib.contextmanager
def _errors_without_cause() -> Iterator[None]:
    """An httpx that maps httpcore's errors to its own and reports another cause."""
    try:
        yield
    except httpcore.ConnectError:
        raise httpx.ConnectError("connection failed") from OSError("lost")


# One way an upgrade could break each reliance; keyed like `seam.INTERNALS`.
BREAKERS: dict[str, Breaker] = {
    "httpx.HTTPTransport(verify=ssl_context)": lambda mp: mp.setattr(
        httpx_default, "create_ssl_context", _copied_context
    ),
    "httpcore sync backend start_tls -> SSLContext.wrap_socket": lambda mp: mp.setattr(
        httpcore_sync.SyncStream, "start_tls", _start_tls_without_sni
    ),
    "an error raised in SSLContext.wrap_socket": lambda mp: mp.setattr(
        httpx_default, "map_httpcore_exceptions", _errors_without_cause
    ),
}

NAMES = [reliance.name for reliance in seam.INTERNALS]


def test_every_reliance_has_a_breaking_case() -> None:
    assert sorted(BREAKERS) == sorted(NAMES)


def test_the_installed_httpx_is_one_the_seam_was_checked_against() -> None:
    """Upgrading httpx or httpcore fails here first: read the seam against the new version,
    run these tests and tests/integration/test_forward.py, then add it to CHECKED_WITH."""
    installed = seam.check_httpx()
    assert installed == {"httpx": httpx.__version__, "httpcore": httpcore.__version__}
    for name, version in installed.items():
        assert version in seam.CHECKED_WITH[name], (
            f"{name} {version} is not among the versions gateway/forward/httpx_seam.py was "
            f"checked against ({', '.join(seam.CHECKED_WITH[name])})"
        )


@pytest.mark.parametrize("reliance", seam.INTERNALS, ids=NAMES)
def test_reliance_holds_on_the_installed_httpx(reliance: seam.Reliance) -> None:
    assert reliance.holds(seam.observe())


@pytest.mark.parametrize("name", NAMES)
def test_a_changed_reliance_is_named_at_start(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    BREAKERS[name](monkeypatch)
    with pytest.raises(IncompatibleHttpx) as raised:
        seam.check_httpx()
    message = str(raised.value)
    assert name in message
    assert f"httpx {httpx.__version__}, httpcore {httpcore.__version__} installed" in message
    assert "httpx 0.28.1, httpcore 1.0.9" in message


# -- the pin through httpx on a real TLS connection (loopback, in-process) -----------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.requests += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops the connection after the handshake (the pin) is expected."""


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Server, bytes, bytes]]:
    """A TLS server on loopback; its CA (PEM) and its certificate (DER)."""
    root = tmp_path_factory.mktemp("tls")
    ca = devpki.make_ca()
    leaf = devpki.issue(ca, "receiver", server=True, hosts=("127.0.0.1",))
    (root / "server.crt").write_bytes(devpki.certificate_pem(leaf))
    (root / "server.key").write_bytes(devpki.key_pem(leaf))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(root / "server.crt", root / "server.key")
    server = _Server(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, devpki.certificate_pem(ca), leaf.certificate.public_bytes(Encoding.DER)
    server.shutdown()
    server.server_close()
    thread.join(5)


def _get(server: _Server, ca: bytes, pin: bytes) -> httpx.Response | Exception:
    context = seam.PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca.decode())
    context.pin = pin
    transport = httpx.HTTPTransport(verify=context)
    with httpx.Client(transport=transport, timeout=5, trust_env=False) as client:
        try:
            return client.get(f"https://127.0.0.1:{server.server_address[1]}/")
        except httpx.HTTPError as exc:
            return exc


def test_the_pin_admits_the_pinned_key_through_httpx(
    tls_server: tuple[_Server, bytes, bytes],
) -> None:
    server, ca, der = tls_server
    before = server.requests
    answer = _get(server, ca, seam.spki_sha256(der))
    assert isinstance(answer, httpx.Response)
    assert answer.status_code == 204
    assert server.requests == before + 1


def test_another_key_is_refused_before_a_request_is_written(
    tls_server: tuple[_Server, bytes, bytes],
) -> None:
    server, ca, _ = tls_server
    before = server.requests
    answer = _get(server, ca, bytes(32))
    assert isinstance(answer, httpx.ConnectError)
    assert classify_error(answer).reason == "server-key-not-pinned"
    assert server.requests == before


# -- nothing else in the gateway leans on how httpx opens connections ---------------------------

GATEWAY = Path(seam.__file__).parent.parent


def _leans(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            "SSLContext" in ast.unparse(b) for b in node.bases
        ):
            yield f"line {node.lineno}: class {node.name}(SSLContext)"
        elif isinstance(node, ast.FunctionDef) and node.name in {"wrap_socket", "wrap_bio"}:
            yield f"line {node.lineno}: def {node.name}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            ("httpcore", "httpx._")
        ):
            yield f"line {node.lineno}: from {node.module} import ..."
        elif isinstance(node, ast.Import) and any(
            a.name.startswith(("httpcore", "httpx._")) for a in node.names
        ):
            yield f"line {node.lineno}: import httpcore"


def test_only_the_seam_leans_on_how_httpx_opens_connections() -> None:
    found = {
        str(path.relative_to(GATEWAY)): touches
        for path in sorted(GATEWAY.rglob("*.py"))
        if path.name != "httpx_seam.py" and (touches := list(_leans(ast.parse(path.read_text()))))
    }
    assert found == {}
