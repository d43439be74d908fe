"""Load a model and its processor into an adapter: short name, hub id, directory or GGUF.

Hub ids are looked up in the local cache first; the network is only tried when the
cache misses, HF_HUB_OFFLINE is unset and the hub answers a 3-second connection probe
(otherwise huggingface_hub retries for ~25 s before failing). Every failure is a
one-line ModelError that says how to fix it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from stvcli.config import ModelOptions
from stvcli.errors import ModelError
from stvcli.models import remote_code
from stvcli.models.base import ModelAdapter
from stvcli.models.registry import adapter_class, resolve_name
from stvcli.models.vision import VisionAdapter

log = logging.getLogger(__name__)
T = TypeVar("T")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: a hub id or a local directory, plus an optional GGUF file name."""

    location: str
    local: bool
    gguf_file: str | None = None


def resolve_source(model: str) -> ModelSource:
    """Short name -> hub id; existing path -> local; ``*.gguf`` -> its directory + file name."""
    hub_id = resolve_name(model)
    path = Path(hub_id).expanduser()
    if hub_id.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file {model!r} does not exist; pass the path of a .gguf file")
        return ModelSource(str(path.parent.resolve()), True, path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{model!r} is not a model directory (no config.json); pass a save_pretrained directory")
        return ModelSource(str(path.resolve()), True)
    if path.exists():
        raise ModelError(f"{model!r} is a file; pass a model directory, a hub id, a .gguf file or a short name")
    if hub_id.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(hub_id):
        raise ModelError(f"model path {model!r} does not exist; pass an existing directory, a hub id or a short name (stv models)")
    return ModelSource(hub_id, False)


def _offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


@lru_cache(maxsize=1)
def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _not_found_locally(hub_id: str) -> ModelError:
    return ModelError(
        f"model {hub_id!r} was not found locally and the Hugging Face hub cannot be reached (offline); "
        f"download it on a connected machine (`hf download {hub_id}`) and copy the cache (HF_HOME) here, "
        "or pass a local model directory"
    )


def _fetch(load: Callable[..., T], source: ModelSource, what: str, **kwargs: Any) -> T:
    """``load(source.location, **kwargs)``: cache first, network only when reachable; ModelError on failure."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    try:
        if source.local:
            return load(source.location, **kwargs)
        try:
            return load(source.location, local_files_only=True, **kwargs)
        except OSError as error:
            if _offline() or not _hub_reachable():
                raise _not_found_locally(source.location) from error
            log.info("%s of %s not cached (%s); downloading", what, source.location, _one_line(error))
        return load(source.location, **kwargs)
    except ModelError:
        raise
    except ImportError as error:  # remote code whose imports are missing (e.g. torchvision for Qwen-VL)
        raise ModelError(f"cannot import the code of {source.location!r}: {_one_line(error)}") from error
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise ModelError(f"{source.location!r} runs its own code from the hub; pass --trust-remote-code if you trust it") from error
        raise ModelError(f"cannot load the {what} of {source.location!r}: {_one_line(error)}") from error
    except OSError as error:
        raise ModelError(
            f"cannot load the {what} of {source.location!r}: {_one_line(error)} "
            "(check the hub id or pass a local model directory)"
        ) from error
    except Exception as error:
        if source.gguf_file:  # a truncated or foreign file fails in the GGUF reader with anything
            raise ModelError(f"cannot read GGUF file {source.gguf_file!r}: {_one_line(error)}") from error
        raise


def _device(requested: str) -> str:
    from stvcli import distributed

    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {requested!r} requested but CUDA is not available; pass --device cpu")
    return distributed.device(requested)  # under torchrun, auto/cuda -> cuda:LOCAL_RANK


def _dtype(requested: str, device: str, device_map: str | None) -> torch.dtype:
    if requested == "auto":
        on_gpu = device.startswith("cuda") or (device_map is not None and torch.cuda.is_available())
        return torch.bfloat16 if on_gpu else torch.float32
    if requested not in _DTYPES:
        raise ModelError(f"unknown dtype {requested!r}; use auto, float32, bfloat16 or float16")
    return _DTYPES[requested]


def is_vision_config(config: Any) -> bool:
    """Whether the config describes an image-text-to-text model (else a causal LM)."""
    auto_map = getattr(config, "auto_map", None) or {}
    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or "AutoModelForImageTextToText" in auto_map


def _processor_chat_template(source: ModelSource, revision: str | None) -> str | None:
    """The processor-level chat template (chat_template.jinja / .json) a snapshot ships, if any."""
    from transformers.utils import cached_file

    for filename in ("chat_template.jinja", "chat_template.json"):
        try:
            path = cached_file(
                source.location, filename, revision=revision, local_files_only=True,
                _raise_exceptions_for_missing_entries=False,
            )  # fmt: skip
        except OSError:
            path = None
        if path:
            text = Path(path).read_text(encoding="utf-8")
            return json.loads(text)["chat_template"] if filename.endswith(".json") else text
    return None


def _load_processor(cls: type[ModelAdapter], config: Any, source: ModelSource, hub: dict[str, Any]) -> Any:
    """The processor for VLM adapters (parts when AutoProcessor refuses), else the tokenizer."""
    if not (issubclass(cls, VisionAdapter) and is_vision_config(config)):
        return _fetch(AutoTokenizer.from_pretrained, source, "tokenizer", **hub)
    try:
        processor = _fetch(AutoProcessor.from_pretrained, source, "processor", **hub)
        if getattr(processor, "image_processor", None) is not None:
            return processor
        reason = "AutoProcessor returned no image processor"
    except Exception as error:  # noqa: BLE001 - e.g. ImportError: a video processor wants torchvision
        reason = _one_line(error)
    tokenizer = _fetch(AutoTokenizer.from_pretrained, source, "tokenizer", **hub)
    image_processor = _fetch(AutoImageProcessor.from_pretrained, source, "image processor", backend="pil", **hub)
    processor = cls.processor_from_parts(config, tokenizer, image_processor)
    if processor is None:
        raise ModelError(f"cannot build the processor of {source.location!r}: {reason}")
    if not getattr(processor, "chat_template", None):
        processor.chat_template = _processor_chat_template(source, hub.get("revision"))
    log.info("built %s from tokenizer + image processor (%s)", type(processor).__name__, reason)
    return processor


def _load_gguf(source: ModelSource, config: Any, dtype: torch.dtype) -> nn.Module:
    """A causal LM dequantized from a GGUF file, without ``accelerate`` (which
    ``from_pretrained(gguf_file=...)`` insists on): build from the config, copy the tensors in."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    assert source.gguf_file is not None
    path = str(Path(source.location) / source.gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    try:
        tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(f"cannot read GGUF file {path!r}: {_one_line(error)}") from error
    result = model.load_state_dict(tensors, strict=False)
    tied = getattr(config, "tie_word_embeddings", False)
    missing = [key for key in result.missing_keys if not (tied and key == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise ModelError(
            f"GGUF file {path!r} does not fit its own config (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    model.tie_weights()
    return model.eval()


def load_model(options: ModelOptions) -> ModelAdapter:
    """Load ``options.model`` (short name, hub id, directory or .gguf) and wrap it in its adapter.

    With ``trust_remote_code`` the hub's own code is imported and loaded under
    ``remote_code.compat()`` (shims for code written for transformers 4, e.g. Qwen-VL's).
    """
    # compat() must be in force before the remote files are imported and the weights load
    with remote_code.compat() if options.trust_remote_code else nullcontext():
        return _load_model(options)


def _load_model(options: ModelOptions) -> ModelAdapter:
    source = resolve_source(options.model)
    device = _device(options.device)
    dtype = _dtype(options.dtype, device, options.device_map)
    hub = {"revision": options.revision, "trust_remote_code": options.trust_remote_code}
    config = _fetch(AutoConfig.from_pretrained, source, "config", **hub)
    if options.trust_remote_code:
        remote_code.prepare_config(config, dtype)
    model_class = AutoModelForImageTextToText if is_vision_config(config) else AutoModelForCausalLM
    if options.device_map is not None:
        from stvcli.distributed import rank_max_memory

        # under torchrun with several processes per node, each rank shards over its own GPUs
        placement: dict[str, Any] = {"device_map": options.device_map,
                                     "max_memory": rank_max_memory(options.max_memory)}
    else:
        placement = {"device_map": device} if device != "cpu" else {}
    if source.gguf_file:
        model = _load_gguf(source, config, dtype).to(device)
    else:
        model = _fetch(model_class.from_pretrained, source, "weights", config=config, dtype=dtype, **placement, **hub)
        if options.trust_remote_code:
            model = remote_code.finish_loading(model)
    cls = adapter_class(getattr(config, "architectures", None) or [type(model).__name__])  # GGUF configs have none
    processor = _load_processor(cls, config, source, hub)
    return cls(
        model,
        processor,
        options.model,
        projection_pattern=options.projection_pattern,
        use_chat_template=options.chat_template,
        revision=options.revision,
    )
