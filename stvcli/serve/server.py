"""``serve(config)``: load the model and its vectors, then run the app under uvicorn.

The listening socket is bound first, before the model loads: a busy port or a host
that does not resolve (or is not an address of this machine) is a one-line StvError
naming ``--port`` / ``--host`` within a second, and the socket is handed to uvicorn, so
no other process can take the port while the model loads.
"""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from stvcli.errors import StvError
from stvcli.models.base import ModelAdapter
from stvcli.serve.config import ServeConfig
from stvcli.vectors import TaskVectors

def model_name(config: ServeConfig) -> str:
    """``--model``, else the model recorded in the first vectors file."""
    if config.model:
        return config.model
    if not config.vectors:
        raise StvError("nothing to serve: pass --vectors FILE (or --model M for the bare model)")
    return TaskVectors.load(config.vectors[0]).model


def load_adapter(config: ServeConfig) -> ModelAdapter:
    from stvcli.models.loading import load_model

    return load_model(config.model_options(model_name(config)))


def non_loopback_warning(config: ServeConfig) -> str | None:
    """The loud warning for a server reachable from other machines (None on loopback)."""
    if config.is_loopback():
        return None
    advice = "" if config.resolved_api_key() else " Set --api-key (or STV_API_KEY)."
    return (f"WARNING: serving on {config.host}, which is not a loopback address: anyone who can reach "
            f"this machine on port {config.port} can use the model.{advice}")


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), as uvicorn would bind it; StvError naming the
    option to change when that is impossible."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # uvicorn's choice
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise StvError(f"--host {host!r} does not resolve ({reason}); give an address of this machine "
                       "such as 127.0.0.1, or a host name it knows") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise StvError(_bind_error(host, port, error)) from None
    return sock


def _bind_error(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"--port {port} is already in use on {host}; stop what uses it or pick another --port"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"--port {port} needs privileges on this machine; pick a --port above 1023"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine; give one of its addresses, 127.0.0.1 or 0.0.0.0"
    return f"cannot listen on --host {host} --port {port} ({error.strerror or error}); change --host or --port"


def serve(config: ServeConfig) -> None:
    """Run ``stv serve-local`` until interrupted."""
    try:
        import uvicorn

        from stvcli.serve.app import create_app
    except ImportError as error:
        raise StvError(f"serve-local needs the serve extras ({error.name} is missing): "
                       "pip install 'stvcli[serve]'") from None
    if not config.model and not config.vectors:
        model_name(config)  # the one-line "nothing to serve" error
    config.resolved_api_key()  # a blank $STV_API_KEY fails here, before anything loads
    with closing(bind_socket(config.host, config.port)) as sock:
        warning = non_loopback_warning(config)
        if warning:
            print(f"\n{'!' * 78}\n{warning}\n{'!' * 78}\n", file=sys.stderr, flush=True)
        app = create_app(config)
        catalog = app.state.catalog
        print(f"stv serve-local: http://{_url_host(config.host)}:{config.port}/v1 serving "
              f"{', '.join(catalog.ids())}", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level=config.log_level.lower(), lifespan="on"))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            if not server.started:
                raise
        except SystemExit:  # uvicorn exits when its start-up fails
            if server.started:
                raise
        if not server.started:
            raise StvError("the server stopped before it started serving; see the log lines above")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextmanager
def background_server(app: Any, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a daemon thread (for tests and benchmarks); yields its base URL.

    Port 0 picks a free port; the socket is bound before the server starts, so there is
    no race for it.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="stv-uvicorn")
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
