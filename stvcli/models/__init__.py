"""Model adapters: one per family, found by architecture (see ``registry``)."""

from stvcli.models.base import ModelAdapter
from stvcli.models.registry import adapter_for, list_models, register

__all__ = ["ModelAdapter", "adapter_for", "list_models", "load_model", "register"]


def __getattr__(name: str):
    # load_model pulls in the transformers Auto classes; import it lazily.
    if name == "load_model":
        from stvcli.models.loading import load_model

        return load_model
    raise AttributeError(name)
