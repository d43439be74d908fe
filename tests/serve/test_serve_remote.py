"""Remote images (--allow-remote-images): public addresses only (checked after
resolving, on every redirect hop), no credentials, the connection pinned to the checked
address, and one answer for every failure.

The tests serve images from a loopback HTTP server, which the real policy refuses; they
allow exactly 127.0.0.1 by patching ``address_allowed`` and name it "images.test"
through a patched resolver, which the system resolver does not know.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient
from serve_helpers import API_KEY, Served, image_of, serve_config

from stvcli.prompt import Prompt
from stvcli.scoring import generate
from stvcli.serve import remote
from stvcli.serve.app import create_app
from stvcli.serve.errors import ApiError

PARAM = "messages.0.content.0.image_url.url"


@dataclass
class ImageHost:
    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)

    def url(self, path: str, host: str = "images.test") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def image_host() -> Iterator[ImageHost]:
    """A loopback HTTP server: /cat.png, /hop/N (redirects N times, then to /cat.png),
    /to?url (redirects to url), /slow (after 1.5 s), /big (more than the image limit),
    anything else 404."""
    buffer = io.BytesIO()
    image_of().save(buffer, format="PNG")
    png = buffer.getvalue()
    host: ImageHost

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            host.requests.append((self.path, self.headers.get("Host", "")))
            if self.path == "/cat.png":
                self.reply(200, png, "image/png")
            elif self.path.startswith("/hop/"):
                left = int(self.path.rsplit("/", 1)[1])
                self.redirect(f"/hop/{left - 1}" if left > 1 else "/cat.png")
            elif self.path.startswith("/to?"):
                self.redirect(self.path[len("/to?"):])
            elif self.path == "/slow":
                time.sleep(1.5)
                self.reply(200, png, "image/png")
            elif self.path == "/big":
                self.reply(200, png + bytes(200_000), "image/png")
            else:
                self.send_error(404)

        def reply(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        # Join handler threads on close (a /slow reply finishes before the next test)
        # and stay quiet when a client hangs up on purpose: socketserver's default
        # handle_error prints to whatever sys.stderr is then, e.g. another test's CliRunner.
        daemon_threads = False

        def handle_error(self, request, client_address) -> None:
            pass

    server = Server(("127.0.0.1", 0), Handler)
    host = ImageHost(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Allow 127.0.0.1 (only); resolve images.test to it; returns the names resolved."""
    resolved: list[str] = []
    real_resolve = remote.resolve_host

    async def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"] if host == "images.test" else await real_resolve(host, port)

    monkeypatch.setattr(remote, "address_allowed", lambda address: address == "127.0.0.1")
    monkeypatch.setattr(remote, "resolve_host", resolve)
    return resolved


def fetch(url: str, max_bytes: int = 64 * 1024) -> bytes:
    return asyncio.run(remote.fetch(url, max_bytes=max_bytes, param=PARAM))


def refusal(url: str) -> ApiError:
    with pytest.raises(ApiError) as error:
        fetch(url)
    return error.value


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1", "fec0::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:7f00:1::1",
    "2002:a00:1::1", "::127.0.0.1", "not an address", "",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not remote.address_allowed(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "2002:808:808::1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert remote.address_allowed(address)


def test_loopback_is_refused_without_connecting(image_host: ImageHost) -> None:
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "0x7f.1", "127.1", "[::1]"):
        url = image_host.url("/cat.png", host)
        error = refusal(url)
        assert (error.status, error.code, error.param) == (400, "image_fetch_failed", PARAM)
    assert image_host.requests == []  # nothing reached the server


def test_credentials_and_other_schemes_are_refused(loopback_allowed, image_host: ImageHost) -> None:
    for url in (f"http://user:secret@images.test:{image_host.port}/cat.png", f"http://user@images.test:{image_host.port}/cat.png",
                "ftp://images.test/cat.png", "http:///cat.png"):
        error = refusal(url)
        assert error.code == "invalid_image_url" and error.status == 400, url
    assert image_host.requests == []


def test_the_connection_is_pinned_to_the_checked_address(loopback_allowed, image_host: ImageHost) -> None:
    """images.test is unknown to the system resolver: only a connection to the address
    checked once can succeed, and the server still sees the name in Host."""
    assert fetch(image_host.url("/cat.png")).startswith(b"\x89PNG")
    assert loopback_allowed == ["images.test"]
    assert image_host.requests == [("/cat.png", f"images.test:{image_host.port}")]


def test_redirects_are_followed_and_checked_at_every_hop(loopback_allowed, image_host: ImageHost) -> None:
    assert fetch(image_host.url(f"/hop/{remote.MAX_REDIRECTS}")).startswith(b"\x89PNG")
    assert len(image_host.requests) == remote.MAX_REDIRECTS + 1
    assert loopback_allowed == ["images.test"] * (remote.MAX_REDIRECTS + 1)  # resolved and checked every hop
    too_many = refusal(image_host.url(f"/hop/{remote.MAX_REDIRECTS + 1}"))
    assert too_many.code == "image_fetch_failed"
    image_host.requests.clear()
    for target in ("http://10.0.0.1/cat.png", "http://169.254.169.254/latest/meta-data",
                   f"http://[::ffff:127.0.0.2]:{image_host.port}/cat.png",
                   f"http://user:pw@images.test:{image_host.port}/cat.png", "file:///etc/passwd"):
        assert refusal(image_host.url(f"/to?{target}")).code == "image_fetch_failed", target
    assert all(path.startswith("/to?") for path, _ in image_host.requests)  # no hop went further


def test_every_fetch_failure_answers_the_same(loopback_allowed, image_host: ImageHost) -> None:
    """A closed port, a 404, a private address, a name that does not resolve: one answer,
    so that answers cannot map what the server can reach."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    errors = [refusal(url) for url in (
        f"http://images.test:{closed_port}/cat.png", image_host.url("/missing.png"), "http://10.0.0.1/cat.png",
        "http://no-such-host.invalid/cat.png", image_host.url("/cat.png", "127.0.0.2"),
    )]
    assert len({(e.status, e.code, e.message, e.param) for e in errors}) == 1
    assert errors[0].code == "image_fetch_failed"


def test_a_fetch_has_one_deadline(loopback_allowed, image_host: ImageHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "FETCH_TIMEOUT_S", 0.3)
    began = time.monotonic()
    assert refusal(image_host.url("/slow")).code == "image_fetch_failed"
    assert time.monotonic() - began < 1.2


def test_remote_images_are_capped(loopback_allowed, image_host: ImageHost) -> None:
    error = refusal(image_host.url("/big"))
    assert (error.status, error.code) == (413, "image_too_large")


def test_remote_images_when_allowed(loopback_allowed, image_host: ImageHost, vector_files, served: Served) -> None:
    app = create_app(serve_config(vector_files, allow_remote_images=True), served.adapter)
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def ask(url: str):
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what?"}]
        request = {"model": served.ids["bare"], "max_tokens": 4, "messages": [{"role": "user", "content": content}]}
        return client.post("/v1/chat/completions", json=request, headers=headers)

    with TestClient(app) as client:
        response = ask(image_host.url("/cat.png"))
        assert response.status_code == 200, response.text
        expected = generate(served.adapter, [Prompt("<image>what?", (image_of(),))], 4)[0]
        assert response.json()["choices"][0]["message"]["content"] == expected
        missing = ask(image_host.url("/dog.png"))
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "image_fetch_failed"
        private = ask(image_host.url("/cat.png", "127.0.0.2"))
        assert private.json()["error"] == missing.json()["error"]
