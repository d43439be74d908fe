"""``serve(config)``: load the model and its vectors, then run the app under uvicorn."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def serve(config: ServeConfig) -> None:
    """Run ``stv serve-local`` until interrupted."""
    try:
        import uvicorn

        from stvcli.serve.app import create_app
    except ImportError as error:
        raise StvError(f"serve-local needs the serve extras ({error.name} is missing): "
                       "pip install 'stvcli[serve]'") from None
    warning = non_loopback_warning(config)
    if warning:
        print(f"\n{'!' * 78}\n{warning}\n{'!' * 78}\n", file=sys.stderr, flush=True)
    app = create_app(config)
    catalog = app.state.catalog
    print(f"stv serve-local: http://{config.host}:{config.port}/v1 serving {', '.join(catalog.ids())}", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)


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
