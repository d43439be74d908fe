"""Tiny random models of every supported family, built in-process (no hub, no GPU).

Real transformers classes with the project's test-bed configs (2 layers, 4 heads of
16, hidden 64; Gemma-3 with head_dim 32), one shared byte-level BPE tokenizer that knows every family's special
tokens, and locally built image processors (PIL backends, 32x32 images). Unregistered
architectures for ``GenericAdapter`` (``GENERIC_FAMILIES``: GPT-2, GPT-NeoX, Falcon, OPT,
Bloom, GPT-J, MPT) are smaller still: hidden 32, 4 heads of 8. Each build
takes tens of milliseconds; the trained tokenizer is cached per process, models are
built fresh (seeded) so callers may mutate them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import PreTrainedTokenizerFast

from stvcli.models.base import ModelAdapter
from stvcli.models.registry import adapter_for

TEXT_FAMILIES = ("llama", "qwen2", "gemma3")
VISION_FAMILIES = ("idefics2", "idefics3", "qwen2-vl", "qwen2.5-vl", "llava")
TINY_FAMILIES = TEXT_FAMILIES + VISION_FAMILIES
#: Architectures nobody registered (served by ``GenericAdapter``, projections found by
#: structure): 2 layers, 4 heads of 8, hidden 32. Not in ``TINY_FAMILIES`` (whose tests
#: assume registered families).
GENERIC_FAMILIES = ("gpt2", "gpt-neox", "falcon", "opt", "bloom", "gptj", "mpt")

#: Side of the square images the tiny vision towers see.
IMAGE_SIZE = 32

SPECIAL_TOKENS = (
    "<pad>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<end_of_utterance>", "<global-img>",
    "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>",
)  # fmt: skip
_VOCAB_SIZE = 384  # 256 bytes + special tokens + ~115 merges

_CORPUS = (
    "Question: what colour is the shape? Answer: red. The quick brown fox jumps over the lazy dog.\n"
    "Question: what is the capital of France? Answer: Paris. Input: hot Output: cold.\n"
    "the a an is are was of in on to and with for at by from this that it not yes no\n"
    "red green blue yellow purple orange circle square triangle cross top bottom left right\n"
    "one two three four five six seven eight nine ten cat dog bird fish apple banana\n"
)

TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)  # fmt: skip
SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
QWEN_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tokenizer.to_str()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tiny tokenizer (adds ``<s>``; pad ``<pad>`` = 0, bos 1, eos 2)."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_image(seed: int = 0, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> Image.Image:
    """A random RGB image of ``size`` (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _text_config(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    return dict(TEXT, vocab_size=len(tokenizer))


def _build_llama(tok: PreTrainedTokenizerFast) -> tuple[nn.Module, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**_text_config(tok))), tok


def _build_qwen2(tok: PreTrainedTokenizerFast) -> tuple[nn.Module, Any]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**_text_config(tok))), tok


def _build_gemma3(tok: PreTrainedTokenizerFast) -> tuple[nn.Module, Any]:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    # head_dim 32 != hidden 64 / 4 heads: the o_proj input is 128 wide (as Gemma-3's 256 x 4 vs 640).
    return Gemma3ForCausalLM(Gemma3TextConfig(**_text_config(tok), head_dim=32)), tok


def _generic(tok: PreTrainedTokenizerFast, config_class: str, model_class: str, **geometry: Any) -> tuple[nn.Module, Any]:
    import transformers

    ids = dict(vocab_size=len(tok), pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = getattr(transformers, config_class)(**ids, **geometry, architectures=[model_class])
    return getattr(transformers, model_class)(config), tok


#: family -> (config class, model class, geometry); each config under its own names.
_GENERIC_SPECS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # attention c_proj and mlp.c_proj are both transformers Conv1D (weight [in, out])
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_layer=2, n_head=4, n_positions=512)),
    # attention.dense beside mlp.dense_4h_to_h
    "gpt-neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                            intermediate_size=64, max_position_embeddings=512)),
    # self_attention.dense (FalconLinear) beside mlp.dense_4h_to_h
    "falcon": ("FalconConfig", "FalconForCausalLM", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                        max_position_embeddings=512)),
    # model.decoder.layers.N.self_attn.out_proj beside fc2
    "opt": ("OPTConfig", "OPTForCausalLM", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                               word_embed_proj_dim=32, max_position_embeddings=512)),
    # self_attention.dense beside mlp.dense_4h_to_h; n_head
    "bloom": ("BloomConfig", "BloomForCausalLM", dict(hidden_size=32, n_layer=2, n_head=4)),
    # attn.out_proj beside mlp.fc_out
    "gptj": ("GPTJConfig", "GPTJForCausalLM", dict(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=512)),
    # transformer.blocks.N.attn.out_proj beside ffn.down_proj; d_model / n_heads
    "mpt": ("MptConfig", "MptForCausalLM", dict(d_model=32, n_layers=2, n_heads=4, max_seq_len=512)),
}  # fmt: skip


def _build_idefics2(tok: PreTrainedTokenizerFast) -> tuple[nn.Module, Any]:
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessorPil,
        Idefics2Processor,
    )

    perceiver = dict(hidden_size=64, resampler_n_latents=8, resampler_depth=1, resampler_n_heads=2,
                     resampler_head_dim=16, num_key_value_heads=1)  # fmt: skip
    config = Idefics2Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        text_config=dict(model_type="mistral", **_text_config(tok)),
        vision_config=SIGLIP,
        perceiver_config=perceiver,
    )
    image_processor = Idefics2ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_image_splitting=False)
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=8)
    return Idefics2ForConditionalGeneration(config), processor


def _build_idefics3(tok: PreTrainedTokenizerFast) -> tuple[nn.Module, Any]:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    config = Idefics3Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        text_config=dict(model_type="llama", **_text_config(tok)),
        vision_config=SIGLIP,
    )
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE}, do_image_splitting=False
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4)
    return Idefics3ForConditionalGeneration(config), processor


def _qwen_ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    names = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
             "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}  # fmt: skip
    return {key: tok.convert_tokens_to_ids(token) for key, token in names.items()}


def _qwen_image_processor() -> Any:
    from transformers import Qwen2VLImageProcessorPil

    # Every image becomes 56x56: 4x4 patches of 14, merged 2x2 -> 4 image tokens.
    pixels = 56 * 56
    return Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels, patch_size=14, merge_size=2, temporal_patch_size=2)


def _build_qwen2_vl(tok: PreTrainedTokenizerFast) -> tuple[nn.Module, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from stvcli.models.qwen2_vl import Qwen2VLAdapter

    vision = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
    text = dict(_text_config(tok), rope_parameters=QWEN_ROPE)
    config = Qwen2VLConfig(**_qwen_ids(tok), text_config=text, vision_config=vision)
    processor = Qwen2VLAdapter.processor_from_parts(config, tok, _qwen_image_processor())
    return Qwen2VLForConditionalGeneration(config), processor


def _build_qwen2_5_vl(tok: PreTrainedTokenizerFast) -> tuple[nn.Module, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from stvcli.models.qwen2_vl import Qwen25VLAdapter

    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])  # fmt: skip
    text = dict(_text_config(tok), rope_parameters=QWEN_ROPE)
    config = Qwen2_5_VLConfig(**_qwen_ids(tok), text_config=text, vision_config=vision)
    processor = Qwen25VLAdapter.processor_from_parts(config, tok, _qwen_image_processor())
    return Qwen2_5_VLForConditionalGeneration(config), processor


def _build_llava(tok: PreTrainedTokenizerFast) -> tuple[nn.Module, Any]:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    config = LlavaConfig(
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        text_config=dict(model_type="llama", **_text_config(tok)),
        vision_config=dict(model_type="clip_vision_model", projection_dim=32, **SIGLIP),
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    # (32/8)^2 = 16 patches + 1 CLS - 1 (the "default" strategy drops CLS) = 16 image tokens.
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
    )  # fmt: skip
    return LlavaForConditionalGeneration(config), processor


_BUILDERS: dict[str, Callable[[PreTrainedTokenizerFast], tuple[nn.Module, Any]]] = {
    "llama": _build_llama,
    "qwen2": _build_qwen2,
    "gemma3": _build_gemma3,
    "idefics2": _build_idefics2,
    "idefics3": _build_idefics3,
    "qwen2-vl": _build_qwen2_vl,
    "qwen2.5-vl": _build_qwen2_5_vl,
    "llava": _build_llava,
    **{
        family: (lambda tok, spec=spec: _generic(tok, spec[0], spec[1], **spec[2]))
        for family, spec in _GENERIC_SPECS.items()
    },
}


def build_tiny(family: str, seed: int = 0) -> tuple[nn.Module, Any]:
    """A fresh (model, processor-or-tokenizer) pair; weights drawn from ``seed``, fp32, eval mode."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; one of {', '.join(TINY_FAMILIES + GENERIC_FAMILIES)}")
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = _BUILDERS[family](tokenizer)
    return model.eval(), processor


def tiny_adapter(family: str, seed: int = 0, **adapter_kwargs: Any) -> ModelAdapter:
    """The adapter of a fresh tiny model of ``family`` (see ``TINY_FAMILIES``, ``GENERIC_FAMILIES``)."""
    model, processor = build_tiny(family, seed)
    return adapter_for(model, processor, f"tiny-{family}", **adapter_kwargs)


def save_tiny_model(family: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny model to ``directory`` in the layout of a hub snapshot; return the path.

    Qwen2-VL-style processors cannot be saved as such without torchvision, so, like on
    the hub, the tokenizer and the image processor are saved side by side.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny(family, seed)
    model.save_pretrained(path)
    if family in ("qwen2-vl", "qwen2.5-vl"):
        processor.tokenizer.save_pretrained(path)
        processor.image_processor.save_pretrained(path)
    else:
        processor.save_pretrained(path)
    return path


def group_prompts(family: str) -> list[Any]:
    """Four many-shot prompts sharing three demonstrations (with images for vision families)."""
    from stvcli.data.tasks import get_task
    from stvcli.data.types import Item

    vision = family in VISION_FAMILIES
    task = get_task("vqa" if vision else "text")
    words = "red green blue cat dog bird fish apple banana one two three".split()
    items = [
        Item(uid=str(i), question=" ".join(words[(i * j) % 12] for j in range(1, 2 + i % 4)), answers=(words[i % 12],),
             images=(tiny_image(i),) if vision else ())
        for i in range(7)
    ]
    return [task.build_prompt(q, items[4:]) for q in items[:4]]


@contextmanager
def recording_inputs(modules: Sequence[nn.Module]) -> Iterator[list[list[torch.Tensor]]]:
    """Independent of ``stvcli.engine``: per module, the input of every forward call
    (e.g. each layer's attention output projection: [B, T, H * D])."""
    calls: list[list[torch.Tensor]] = [[] for _ in modules]
    handles = [module.register_forward_pre_hook(lambda m, args, i=i: calls[i].append(args[0].detach().clone()))
               for i, module in enumerate(modules)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def per_row_scores(adapter: ModelAdapter, prompts: Sequence[Any], answers: Sequence[str], candidates: Any,
                   n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference scores one prompt and one candidate row at a time (``scoring.answer_scores``):
    first-token and total log-likelihoods, [len(prompts) * n] each, prompt-major."""
    from stvcli.scoring import answer_scores

    first, total = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        for s in range(n):
            scores = answer_scores(adapter, [prompt], [answer], candidates.rows(slice(s, s + 1)))
            first.append(scores.first_token)
            total.append(scores.total)
    return torch.cat(first), torch.cat(total)
