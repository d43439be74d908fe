"""stv: sensitivity-aware task vectors for many-shot multimodal in-context learning."""

__version__ = "0.1.0"
