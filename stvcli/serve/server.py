"""``serve(config)``: load the model and its vectors, then run the app under uvicorn."""

from __future__ import annotations

import logging

from stvcli.errors import StvError
from stvcli.models.base import ModelAdapter
from stvcli.serve.config import ServeConfig
from stvcli.vectors import TaskVectors

log = logging.getLogger("stvcli.serve")


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
        log.warning(warning)
        print(f"\n{'!' * 78}\n{warning}\n{'!' * 78}\n", flush=True)
    app = create_app(config)
    catalog = app.state.catalog
    print(f"stv serve-local: http://{config.host}:{config.port}/v1 serving {', '.join(catalog.ids())}", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)
