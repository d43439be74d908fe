"""``stv serve-local``: an OpenAI-compatible server for a model with its task vectors.

``ServeConfig`` and ``serve`` import without the serve extras (fastapi, uvicorn);
``serve`` explains how to install them when they are missing.
"""

from stvcli.serve.config import ServeConfig


def serve(config: ServeConfig) -> None:
    """Load the model and vectors named by ``config`` and serve them until interrupted."""
    from stvcli.serve.server import serve as run

    run(config)


__all__ = ["ServeConfig", "serve"]
