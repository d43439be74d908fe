"""Compatibility shims for hub remote code written for transformers 4.x (Qwen-VL).

``Qwen/Qwen-VL`` (and ``-Chat``) ship their modeling code on the hub
(``trust_remote_code``); it was written for transformers 4.32. On transformers 5 it
does not import, and once imported it misbehaves in ways that matter to stv, which
reads and writes the input of every ``transformer.h.N.attn.c_proj``. ``compat()``
is entered around loading (config, weights, tokenizer) and ``finish_loading`` runs
on the loaded model. The remote files themselves are never modified; every shim is
applied to the imported classes or the loaded model, only where the problem exists:

1. imports: transformers checks every import in the remote files, and
   ``transformers_stream_generator`` (only used by ``chat_stream``) is missing or does
   not import on transformers 5; it is left out of that check. The class handed to the
   auto classes already has ``GenerationMixin`` (``generation_capable``), else a second
   load in one process gets a class without ``generate``.
2. ``get_head_mask`` (a transformers 4 ``ModuleUtilsMixin`` method the forward calls)
   no longer exists; the 4.x behaviour is added back.
3. weights: transformers 5 re-runs ``_init_weights`` on every module with a tensor it
   did not load. ``QWenAttention`` holds a non-persistent buffer (``masked_bias``) and
   the remote ``_init_weights`` re-draws any ``c_proj.weight`` below the module it is
   given, so every ``attn.c_proj`` weight of a checkpoint was silently replaced by
   noise. ``_init_weights`` now skips modules whose parameters were all loaded (and
   keeps the loaded ones where only some are missing).
4. meta tensors: the model is built on the meta device and two plain tensor
   attributes (``RotaryEmbedding.inv_freq``, ``QWenAttention.logn_tensor``) are not
   parameters or buffers, so loading never materialises them; ``finish_loading``
   computes them again (and refuses a model that still has meta tensor attributes).
5. generation: transformers 5 hands the KV cache over as ``cache=`` (and may build a
   ``DynamicCache``) while this code reads ``past_key_values`` as tuples, so every
   step re-ran the whole prompt; and its single-token steps fail without an attention
   mask, which generate does not always pass. The model now declines the default
   ``DynamicCache``, and ``prepare_inputs_for_generation`` passes the tuple cache on,
   always with an attention mask (and ``logits_to_keep``).
6. ``logits_to_keep``: transformers 5 causal LMs take it (stv's scoring passes it);
   the forward accepts it and applies ``lm_head`` to the last positions only.
7. precision: the code converts itself to bf16/fp16 from config flags (on its own
   when none is set, on any bf16 GPU); the flags are set from stv's ``--dtype``.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import math
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from stvcli.errors import ModelError

#: Packages remote files import only in code paths stv never runs (import check skipped).
OPTIONAL_REMOTE_IMPORTS = frozenset({"transformers_stream_generator"})
#: Classes of the Qwen(-VL) remote code this module knows how to adapt.
_QWEN_CLASSES = ("QWenLMHeadModel", "QWenModel", "QWenPreTrainedModel")
_PATCHED = "_stv_compat"
_LOCK = threading.RLock()


# ------------------------------------------------------------------ import-time shims
@contextmanager
def compat() -> Iterator[None]:
    """While inside: remote files import without their optional packages, and every
    remote class transformers imports is adapted before it is used (``adapt_class``)."""
    from transformers import dynamic_module_utils as dmu

    with _LOCK:
        original_imports, original_get_class = dmu.get_imports, dmu.get_class_in_module

        @functools.wraps(original_imports)
        def get_imports(filename: Any) -> list[str]:
            return [name for name in original_imports(filename) if name not in OPTIONAL_REMOTE_IMPORTS]

        @functools.wraps(original_get_class)
        def get_class_in_module(class_name: str, module_path: Any, **kwargs: Any) -> type:
            cls = original_get_class(class_name, module_path, **kwargs)
            adapt_class(cls)
            return generation_capable(cls)

        dmu.get_imports, dmu.get_class_in_module = get_imports, get_class_in_module
        try:
            yield
        finally:
            dmu.get_imports, dmu.get_class_in_module = original_imports, original_get_class


def is_qwen_remote(obj: Any) -> bool:
    """Whether ``obj`` (a class or instance) comes from the Qwen(-VL) remote modeling code."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = sys.modules.get(cls.__module__)
    parts = ("QWenPreTrainedModel", "QWenModel", "QWenAttention", "RotaryEmbedding")
    return cls.__name__ in _QWEN_CLASSES and module is not None and all(hasattr(module, name) for name in parts)


def adapt_class(cls: type) -> None:
    """Apply the class-level shims (2, 3, 5, 6) to a remote class's module (idempotent)."""
    if not is_qwen_remote(cls):
        return
    module = sys.modules[cls.__module__]
    with _LOCK:
        base, lm = module.QWenPreTrainedModel, getattr(module, "QWenLMHeadModel", None)
        if base.__dict__.get(_PATCHED, False):  # on the class: a re-executed module has new classes
            return
        if not hasattr(base, "get_head_mask"):
            base.get_head_mask = _get_head_mask
        base._init_weights = _guarded_init(base._init_weights)
        if lm is not None:
            lm._supports_default_dynamic_cache = classmethod(lambda cls: False)
            lm.prepare_inputs_for_generation = _cache_aware_prepare(lm.prepare_inputs_for_generation)
            if "logits_to_keep" not in inspect.signature(lm.forward).parameters:
                lm.forward = _with_logits_to_keep(lm.forward)
        setattr(base, _PATCHED, True)


def generation_capable(cls: type) -> type:
    """The class with ``GenerationMixin`` among its bases, as the auto classes build it.

    They register the class as they import it and only then add the mixin, so a second
    load in the same process (a second stage, the server) took the registered class,
    which has no ``generate``; with this class registered instead, every load can generate.
    """
    if not is_qwen_remote(cls) or cls.__name__ != "QWenLMHeadModel":
        return cls
    from transformers.models.auto.auto_factory import add_generation_mixin_to_remote_model

    with _LOCK:
        made = cls.__dict__.get("_stv_generation_capable")
        if made is None:
            made = add_generation_mixin_to_remote_model(cls)
            cls._stv_generation_capable = made  # type: ignore[attr-defined]
        return made


def _get_head_mask(self: nn.Module, head_mask: torch.Tensor | None, num_hidden_layers: int,
                   is_attention_chunked: bool = False) -> Any:
    """transformers 4.x ``ModuleUtilsMixin.get_head_mask``."""
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:
        head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:
        head_mask = head_mask[:, None, :, None, None]
    head_mask = head_mask.to(dtype=self.dtype)
    return head_mask.unsqueeze(-1) if is_attention_chunked else head_mask


def _loaded(tensor: torch.Tensor) -> bool:
    return bool(getattr(tensor, "_is_hf_initialized", False))


def _guarded_init(init: Any) -> Any:
    """``_init_weights`` that leaves tensors transformers loaded from the checkpoint alone."""
    if getattr(init, "_stv_guarded", False):
        return init

    @functools.wraps(init)
    def _init_weights(self: nn.Module, module: nn.Module) -> None:
        params = list(module.parameters())
        loaded = [p for p in params if _loaded(p)]
        if params and len(loaded) == len(params):
            return  # everything below this module came from the checkpoint
        saved = [(p, p.detach().clone()) for p in loaded if not p.is_meta]
        init(self, module)
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)

    _init_weights._stv_guarded = True  # type: ignore[attr-defined]
    return _init_weights


def _cache_aware_prepare(prepare: Any) -> Any:
    """``prepare_inputs_for_generation`` that takes transformers 5's ``cache=`` (the
    tuple cache this code returns) and always passes an attention mask."""
    if getattr(prepare, "_stv_cache_aware", False):
        return prepare

    @functools.wraps(prepare)
    def prepare_inputs_for_generation(self: nn.Module, input_ids: torch.Tensor, past_key_values: Any = None,
                                      inputs_embeds: Any = None, **kwargs: Any) -> dict[str, Any]:
        cache = kwargs.pop("cache", None)
        past = past_key_values if past_key_values is not None else cache
        if past is not None and not _is_tuple_cache(past):
            if hasattr(past, "get_seq_length") and past.get_seq_length() == 0:
                past = None  # an empty Cache object: the prefill
            else:
                raise TypeError(f"{type(self).__name__} takes its own tuple KV cache, not a {type(past).__name__}")
        for name in ("next_sequence_length", "is_first_iteration"):
            kwargs.pop(name, None)
        if kwargs.get("attention_mask") is None:
            kwargs["attention_mask"] = torch.ones(input_ids.shape[:2], dtype=torch.long, device=input_ids.device)
        inputs = prepare(self, input_ids, past_key_values=past, inputs_embeds=inputs_embeds, **kwargs)
        if kwargs.get("logits_to_keep") is not None:  # generate asks for the last position only
            inputs["logits_to_keep"] = kwargs["logits_to_keep"]
        return inputs

    prepare_inputs_for_generation._stv_cache_aware = True  # type: ignore[attr-defined]
    return prepare_inputs_for_generation


def _is_tuple_cache(past: Any) -> bool:
    return isinstance(past, (tuple, list)) and all(isinstance(layer, (tuple, list)) for layer in past)


def _with_logits_to_keep(forward: Any) -> Any:
    """``forward`` with transformers 5's ``logits_to_keep`` (int: the last n positions;
    0: all): ``lm_head`` sees only those positions' hidden states."""

    @functools.wraps(forward)
    def wrapped(self: nn.Module, *args: Any, logits_to_keep: int | torch.Tensor = 0, **kwargs: Any) -> Any:
        if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.ndim == 0:
            logits_to_keep = int(logits_to_keep)
        if isinstance(logits_to_keep, int) and logits_to_keep == 0:
            return forward(self, *args, **kwargs)
        if kwargs.get("labels") is not None:
            raise ValueError("logits_to_keep cannot be combined with labels")
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep

        def only_kept(module: nn.Module, inputs: tuple) -> tuple:
            return (inputs[0][:, keep], *inputs[1:])

        handle = self.get_output_embeddings().register_forward_pre_hook(only_kept)
        try:
            return forward(self, *args, **kwargs)
        finally:
            handle.remove()

    signature = inspect.signature(forward)
    parameters = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    parameters.append(inspect.Parameter("logits_to_keep", inspect.Parameter.KEYWORD_ONLY, default=0))
    wrapped.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return wrapped


# ------------------------------------------------------------------ config and loaded model
def prepare_config(config: Any, dtype: torch.dtype) -> None:
    """Set the remote code's own precision flags from stv's dtype (shim 7): with none set
    it picks bf16 on any bf16 GPU and converts itself, whatever ``--dtype`` says."""
    if getattr(config, "model_type", None) != "qwen" or not all(hasattr(config, f) for f in ("bf16", "fp16", "fp32")):
        return
    # imported where transformers' import check does not look (einops: in a try block)
    missing = [name for name in ("einops", "tiktoken") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(f"the Qwen(-VL) remote code needs {' and '.join(missing)}; pip install {' '.join(missing)}")
    config.bf16, config.fp16, config.fp32 = dtype == torch.bfloat16, dtype == torch.float16, dtype == torch.float32


def finish_loading(model: nn.Module) -> nn.Module:
    """Materialise the plain tensor attributes loading leaves on the meta device (shim 4)."""
    if not is_qwen_remote(model):
        return model
    module = sys.modules[type(model).__module__]
    device = model.get_input_embeddings().weight.device
    for sub in model.modules():
        if isinstance(sub, module.RotaryEmbedding) and sub.inv_freq.is_meta:
            fresh = type(sub)(sub.dim, base=sub.base)  # the code's own formula, off the meta device
            sub.inv_freq = fresh.inv_freq.to(device)
            sub._rotary_pos_emb_cache, sub._seq_len_cached, sub._ntk_alpha_cached = None, 0, 1.0
        elif isinstance(sub, module.QWenAttention) and sub.logn_tensor.is_meta:
            sub.logn_tensor = _logn_tensor(sub.seq_length, sub.logn_tensor.shape[1]).to(device)
    left = [f"{name}.{attr}" for name, sub in model.named_modules() for attr, value in vars(sub).items()
            if isinstance(value, torch.Tensor) and value.is_meta]
    if left:
        raise ModelError(
            f"{type(model).__name__}: tensors left on the meta device after loading ({', '.join(left[:3])})"
        )
    return model


def _logn_tensor(seq_length: int, size: int) -> torch.Tensor:
    """``QWenAttention.logn_tensor`` as the remote code builds it: [1, size, 1, 1]."""
    values = [math.log(i, seq_length) if i > seq_length else 1 for i in range(1, size + 1)]
    return torch.tensor(values)[None, :, None, None]
