"""Qwen-VL (Qwen/Qwen-VL, remote code): ViT + Qwen-7B, images passed by file path.

The remote tokenizer turns ``<img>PATH</img>`` into image-pad tokens that encode the
path; the model reads the image from that path. So each ``<image>`` becomes
``Picture k:<img>PATH</img>\\n`` (exactly what its ``from_list_format`` writes) with the
image written to a PNG in a temporary directory owned by the adapter. Decoder
projections are ``transformer.h.N.attn.c_proj``.

The hub's code was written for transformers 4.32; ``stvcli.models.remote_code``
adapts it at load time (imports, ``get_head_mask``, weights kept as loaded, meta
tensors, the KV cache in generation, ``logits_to_keep``). Tested on a tiny random
model built from the unmodified remote files (``tests/models/test_qwen_vl_remote.py``).

Padding: past the config's ``seq_length`` (2048) the model scales attention by the
padded length (dynamic NTK) and by column index (logn attention), so a left-padded
row no longer computes what it computes alone. Within ``seq_length`` padding changes
nothing; a forward whose padded batch is longer raises a one-line ModelError (run
with ``--batch-size 1``: a single row has no padding).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from stvcli.errors import ModelError
from stvcli.models import remote_code
from stvcli.models.registry import register
from stvcli.models.base import discover_projections
from stvcli.models.text import TextAdapter
from stvcli.prompt import IMAGE_PLACEHOLDER


@register
class QwenVLAdapter(TextAdapter):
    family: ClassVar[str] = "qwen-vl"
    architectures: ClassVar[tuple[str, ...]] = ("QWenLMHeadModel",)
    #: Its forward cannot run several tokens over a KV cache (the causal mask takes the
    #: cache's head count for its length), so no shared prefixes.
    prefix_sharing: bool = False
    #: Its tokenizer reads ``<img>PATH</img>`` as an image file to load, and the grounding
    #: tags as boxes and references.
    reserved_markup: ClassVar[tuple[str, ...]] = (
        "<img>", "</img>", "<imgpad>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>",
        "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    )  # fmt: skip

    def __init__(self, model: nn.Module, processor: Any, name: str, **kwargs: Any) -> None:
        if remote_code.is_qwen_remote(model):  # no-ops when stv's loader already did this
            remote_code.adapt_class(type(model))
            remote_code.finish_loading(model)
        tokenizer = _own_tokenizer(processor)
        if getattr(tokenizer, "pad_token_id", None) is None and hasattr(tokenizer, "eod_id"):
            tokenizer.pad_token_id = tokenizer.eod_id  # Qwen's tokenizer has no pad token
        self._image_dir = tempfile.TemporaryDirectory(prefix="stv-qwen-vl-")
        super().__init__(model, processor, name, **kwargs)
        self.seq_length = int(getattr(self.text_config, "seq_length", 0) or 0)
        decoder = getattr(model, "transformer", None)
        if self.seq_length and decoder is not None and remote_code.is_qwen_remote(model):
            decoder.register_forward_pre_hook(self._refuse_long_padding, with_kwargs=True)

    @property
    def tokenizer(self) -> Any:
        # ``QWenTokenizer.tokenizer`` is its inner tiktoken ``Encoding`` (no pad id, no
        # batching): the tokenizer is the processor itself.
        return _own_tokenizer(self.processor)

    def _reserved_strings(self) -> set[str]:
        found = super()._reserved_strings()
        # QWenTokenizer reads every tiktoken special token (<|extra_N|>, ...) in plain text
        special = getattr(self.tokenizer, "special_tokens", None)
        if isinstance(special, dict):
            found.update(token for token in special if isinstance(token, str) and len(token.strip()) >= 3)
        return found

    def _resolve_projections(self, pattern: str | None) -> list[nn.Module]:
        if pattern is not None:
            return super()._resolve_projections(pattern)
        layers = getattr(getattr(self.model, "transformer", None), "h", None)
        if layers is not None and all(isinstance(getattr(layer.attn, "c_proj", None), nn.Linear) for layer in layers):
            return [layer.attn.c_proj for layer in layers]  # not the visual tower's attention
        return discover_projections(self.model, self.name, config=self.text_config)

    def _refuse_long_padding(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        """Forward pre-hook on the decoder: a padded batch past ``seq_length`` is inexact."""
        mask = kwargs.get("attention_mask")
        if mask is None or mask.ndim != 2 or mask.shape[-1] <= self.seq_length or bool(mask.all()):
            return
        raise ModelError(
            f"{self.name}: a batch padded to {mask.shape[-1]} tokens is past Qwen-VL's seq_length {self.seq_length}, "
            "where its dynamic-NTK/logn attention makes a padded row depend on its batch; "
            f"pass --batch-size 1 or keep prompts (with generated tokens) within {self.seq_length} tokens"
        )

    def render_text(self, text: str, n_images: int) -> str:
        # Images stay as placeholders here; _encode_batch knows the images and their paths.
        if self.use_chat_template:
            messages = [{"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text

    def _image_path(self, image: Any) -> str:
        digest = hashlib.sha1(image.tobytes() + repr((image.mode, image.size)).encode()).hexdigest()[:20]
        path = Path(self._image_dir.name) / f"{digest}.png"
        if not path.exists():
            image.save(path)
        return str(path)

    def _encode_batch(self, texts: list[str], images: list[list[Any]]) -> dict[str, torch.Tensor]:
        rows = []
        for text, row_images in zip(texts, images, strict=True):
            pieces = text.split(IMAGE_PLACEHOLDER)
            out = pieces[0]
            for k, (image, piece) in enumerate(zip(row_images, pieces[1:], strict=True), start=1):
                out += f"Picture {k}:<img>{self._image_path(image)}</img>\n" + piece
            rows.append(out)
        return dict(self.tokenizer(rows, padding=True, return_tensors="pt"))


def _own_tokenizer(processor: Any) -> Any:
    """The transformers tokenizer in ``processor`` (a processor's ``.tokenizer``, or itself)."""
    from transformers import PreTrainedTokenizerBase

    if isinstance(processor, PreTrainedTokenizerBase):
        return processor
    return getattr(processor, "tokenizer", processor)
