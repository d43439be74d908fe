"""Random-weight Idefics2 models at the paper's head geometry (32 layers x 32 heads).

The paper runs 32 x 32 = 1,024-head models (Idefics2-8B: Mistral-7B with a SigLIP tower
and a 64-latent perceiver resampler). ``SCALE_CPU`` keeps that head grid and the 64
image tokens per image but shrinks head_dim (8) and the MLP so that 64-shot prompts
(~5,000 tokens) run on 2 CPU cores; ``IDEFICS2_8B`` is the real geometry (for the GPU
script, ``benchmarks/gpu.py``); ``SCALE_TINY`` is small enough for tests.

Images go through ``PixelProcessor``: what ``Idefics2Processor`` does (image markup,
tokens, pixel tensors, masks) written with numpy and PIL alone, because the Idefics2
image processors of transformers 5.0-5.17 need torchvision. tests/test_scale_benchmark.py
checks it against transformers' own processor where that one runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from stvcli.models.base import ModelAdapter


@dataclass(frozen=True)
class ScaleGeometry:
    """A model's size. ``heads`` x ``head_dim`` is the decoder width (o_proj input)."""

    name: str
    layers: int = 32
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 8
    intermediate: int = 512
    vocab: int = 0  # 0: the tokenizer's size; the real model's 32,003 for FLOP-faithful logits
    image_tokens: int = 64  # perceiver latents = tokens per image
    image_size: int = 32  # side of the (square) images fed to the tower
    tower_image_size: int = 32  # the vision config's image_size (position grid); >= image_size
    patch_size: int = 8
    vision_hidden: int = 32
    vision_intermediate: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    resampler_depth: int = 1
    resampler_heads: int = 2
    resampler_head_dim: int = 16
    resampler_kv_heads: int = 1
    context: int = 32768

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    def scaled(self, **changes: Any) -> "ScaleGeometry":
        return replace(self, **changes)


#: The paper's head grid and image tokens on 2 CPU cores (hidden 256, MLP 512).
SCALE_CPU = ScaleGeometry("scale-cpu")
#: Idefics2-8B (HuggingFaceM4/idefics2-8b config): Mistral-7B decoder, SigLIP-so400m tower
#: (980-pixel position grid; images at 378 pixels, the processor's shortest edge without
#: splitting: 27 x 27 patches), 3-layer perceiver with 64 latents.
IDEFICS2_8B = ScaleGeometry(
    "idefics2-8b", head_dim=128, intermediate=14336, vocab=32003, image_size=378, tower_image_size=980, patch_size=14,
    vision_hidden=1152, vision_intermediate=4304, vision_layers=27, vision_heads=16, resampler_depth=3,
    resampler_heads=16, resampler_head_dim=96, resampler_kv_heads=4,
)  # fmt: skip
#: For tests: 4 x 4 heads, 8 image tokens.
SCALE_TINY = ScaleGeometry("scale-tiny", layers=4, heads=4, kv_heads=2, head_dim=8, intermediate=64, image_tokens=8)

GEOMETRIES = {g.name: g for g in (SCALE_CPU, IDEFICS2_8B, SCALE_TINY)}


def geometry(name: str) -> ScaleGeometry:
    if name not in GEOMETRIES:
        raise ValueError(f"unknown scale geometry {name!r}; one of {', '.join(GEOMETRIES)}")
    return GEOMETRIES[name]


# ----------------------------------------------------------------------------- processor
_MEAN = np.array([0.5, 0.5, 0.5], dtype=np.float32)  # IMAGENET_STANDARD_MEAN / STD, as Idefics2
_STD = np.array([0.5, 0.5, 0.5], dtype=np.float32)


class PixelProcessor:
    """``Idefics2Processor`` without an image processor class (no splitting).

    ``<image>`` becomes ``<fake_token_around_image><image>*n<fake_token_around_image>``
    (adjacent fake tokens merged, a space after a closing one before text, as the
    processor does); images are resized to ``image_size`` squares (PIL bilinear; a
    no-op for images already that size), rescaled to [0, 1] and normalised with mean
    and std 0.5. Returns ``input_ids``, ``attention_mask`` (left padded) and, with
    images, ``pixel_values`` [B, N, 3, S, S] float32 and ``pixel_attention_mask``
    [B, N, S, S] (N = most images in a row; missing images are zeros, as the
    processor pads them, and the model drops all-zero images).
    """

    image_token = "<image>"
    fake_image_token = "<fake_token_around_image>"
    end_of_utterance_token = "<end_of_utterance>"
    chat_template = None

    def __init__(self, tokenizer: Any, image_seq_len: int, image_size: int) -> None:
        self.tokenizer = tokenizer
        self.image_seq_len = image_seq_len
        self.image_size = image_size
        # the adapter only checks that there is one and switches splitting off
        self.image_processor = SimpleNamespace(do_image_splitting=False,
                                               size={"height": image_size, "width": image_size})
        fake = re.escape(self.fake_image_token)
        self._closing = re.compile(rf"{fake}(?=[^\s<])")

    def expand(self, text: str) -> str:
        """The text with every image token expanded to the image's markup."""
        image = f"{self.fake_image_token}{self.image_token * self.image_seq_len}{self.fake_image_token}"
        text = text.replace(self.image_token, image).replace(self.fake_image_token * 2, self.fake_image_token)
        return self._closing.sub(f"{self.fake_image_token} ", text)

    def pixels(self, images: Sequence[Sequence[Image.Image]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values [B, N, 3, S, S] float32, pixel_attention_mask [B, N, S, S] int64)."""
        size = self.image_size
        n = max((len(row) for row in images), default=0)
        values = np.zeros((len(images), n, 3, size, size), dtype=np.float32)
        mask = np.zeros((len(images), n, size, size), dtype=np.int64)
        for b, row in enumerate(images):
            for i, image in enumerate(row):
                image = image.convert("RGB")
                if image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / 255.0  # [S, S, 3]
                values[b, i] = ((array - _MEAN) / _STD).transpose(2, 0, 1)
                mask[b, i] = 1
        return torch.from_numpy(values), torch.from_numpy(mask)

    def __call__(self, text: str | list[str], images: Any = None, padding: bool = True,
                 return_tensors: str = "pt", **_: Any) -> dict[str, torch.Tensor]:
        texts = [text] if isinstance(text, str) else list(text)
        inputs = dict(self.tokenizer([self.expand(t) for t in texts], padding=padding, return_tensors=return_tensors))
        if images is not None:
            rows = [list(row) for row in images]
            counts = [t.count(self.image_token) for t in texts]
            if [len(row) for row in rows] != counts:
                raise ValueError(f"images per row {[len(r) for r in rows]} != image tokens per text {counts}")
            inputs["pixel_values"], inputs["pixel_attention_mask"] = self.pixels(rows)
        return inputs


# ----------------------------------------------------------------------------- model
def scale_config(g: ScaleGeometry, tokenizer: Any) -> Any:
    """The Idefics2Config of geometry ``g`` (Mistral decoder, SigLIP tower, perceiver)."""
    from transformers import Idefics2Config

    text = dict(
        model_type="mistral", hidden_size=g.hidden, intermediate_size=g.intermediate, num_hidden_layers=g.layers,
        num_attention_heads=g.heads, num_key_value_heads=g.kv_heads, head_dim=g.head_dim,
        vocab_size=max(len(tokenizer), g.vocab), max_position_embeddings=g.context, sliding_window=None,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    vision = dict(hidden_size=g.vision_hidden, intermediate_size=g.vision_intermediate,
                  num_hidden_layers=g.vision_layers, num_attention_heads=g.vision_heads,
                  image_size=g.tower_image_size, patch_size=g.patch_size)  # fmt: skip
    perceiver = dict(hidden_size=g.hidden, resampler_n_latents=g.image_tokens, resampler_depth=g.resampler_depth,
                     resampler_n_heads=g.resampler_heads, resampler_head_dim=g.resampler_head_dim,
                     num_key_value_heads=g.resampler_kv_heads)  # fmt: skip
    return Idefics2Config(image_token_id=tokenizer.convert_tokens_to_ids("<image>"), text_config=text,
                          vision_config=vision, perceiver_config=perceiver)


def build_scale(g: ScaleGeometry, seed: int = 0, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> tuple[nn.Module, PixelProcessor]:
    """A fresh random (model, processor) of geometry ``g``, built directly on ``device`` in
    ``dtype`` (an 8B model is never materialised in float32 or on the CPU), eval mode."""
    from transformers import Idefics2ForConditionalGeneration

    from stvcli.testing.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = scale_config(g, tokenizer)
    previous = torch.get_default_dtype()
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            model = Idefics2ForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(previous)
    model.requires_grad_(False)  # inference only (and torch's FLOP counter trips over leaf tensors needing grad)
    return model.to(dtype).eval(), PixelProcessor(tokenizer, g.image_tokens, g.image_size)


def scale_adapter(g: ScaleGeometry, seed: int = 0, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu") -> ModelAdapter:
    """The stv adapter of a fresh model of geometry ``g`` (name ``scale-<g.name>``)."""
    from stvcli.models.registry import adapter_for

    model, processor = build_scale(g, seed, dtype, device)
    return adapter_for(model, processor, f"scale-{g.name}")


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters of the language decoder (embeddings and LM head included) and the rest."""
    total = sum(p.numel() for p in model.parameters())
    text = sum(p.numel() for name, p in model.named_parameters()
               if ".text_model." in f".{name}" or name.startswith("lm_head"))
    return {"total": total, "text": text, "vision": total - text}


# ----------------------------------------------------------------------------- data
def write_scale_vqa(directory: Any, n: int, image_size: int, seed: int = 0, name: str = "vqa.jsonl") -> Any:
    """``n`` VQA records (``stvcli.data.synthetic`` colour questions) with images of
    ``image_size`` pixels, so the processor's resize is a no-op; returns the JSONL path."""
    import json
    import random
    from pathlib import Path

    from stvcli.data.synthetic import COLOURS, draw_image

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        colour = rng.choice(sorted(COLOURS))
        relative = f"images/{name.split('.')[0]}_{i:05d}.png"
        draw_image(colour, seed * 100_003 + i, image_size).save(directory / relative)
        answers = [colour] * rng.randint(7, 10)
        answers += [f"dark {colour}"] * (10 - len(answers))
        lines.append(json.dumps({"question_id": i, "image": relative, "question": "What colour is the picture?",
                                 "answers": answers}))
    path = directory / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
