"""Qwen-VL (Qwen/Qwen-VL, remote code): ViT + Qwen-7B, images passed by file path.

The remote tokenizer turns ``<img>PATH</img>`` into image-pad tokens that encode the
path; the model reads the image from that path. So each ``<image>`` becomes
``Picture k: <img>PATH</img>\\n`` (the format of its ``from_list_format``) with the
image written to a PNG in a temporary directory owned by the adapter. Decoder
projections are ``transformer.h.N.attn.c_proj``.

UNTESTED here: the remote code cannot be fetched on this machine.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from stvcli.models.registry import register
from stvcli.models.text import TextAdapter, discover_projections
from stvcli.prompt import IMAGE_PLACEHOLDER


@register
class QwenVLAdapter(TextAdapter):
    family: ClassVar[str] = "qwen-vl"
    architectures: ClassVar[tuple[str, ...]] = ("QWenLMHeadModel",)
    prefix_sharing: bool = False
    #: Its tokenizer reads ``<img>PATH</img>`` as an image file to load, and the grounding
    #: tags as boxes and references.
    reserved_markup: ClassVar[tuple[str, ...]] = (
        "<img>", "</img>", "<imgpad>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>",
        "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    )  # fmt: skip

    def __init__(self, model: nn.Module, processor: Any, name: str, **kwargs: Any) -> None:
        tokenizer = getattr(processor, "tokenizer", processor)
        if getattr(tokenizer, "pad_token_id", None) is None and hasattr(tokenizer, "eod_id"):
            tokenizer.pad_token_id = tokenizer.eod_id  # Qwen's tokenizer has no pad token
        self._image_dir = tempfile.TemporaryDirectory(prefix="stv-qwen-vl-")
        super().__init__(model, processor, name, **kwargs)

    def _resolve_projections(self, pattern: str | None) -> list[nn.Module]:
        if pattern is not None:
            return super()._resolve_projections(pattern)
        return discover_projections(self.model, self.name)

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
                out += f"Picture {k}: <img>{self._image_path(image)}</img>\n" + piece
            rows.append(out)
        return dict(self.tokenizer(rows, padding=True, return_tensors="pt"))
