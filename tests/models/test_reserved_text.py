"""``ModelAdapter.reserved_text``: what each family refuses in user text, and token counts."""

import pytest

from stvcli.models.qwen_vl import QwenVLAdapter
from stvcli.prompt import IMAGE_PLACEHOLDER, Prompt
from stvcli.testing.tiny import TINY_FAMILIES, tiny_image

FAMILY_MARKUP = {
    "idefics2": ("<fake_token_around_image>", "<end_of_utterance>"),
    "idefics3": ("<fake_token_around_image>", "<global-img>"),
    "qwen2-vl": ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"),
    "qwen2.5-vl": ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"),
    "llava": (),
}


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_family_reserves_the_placeholder_its_markup_and_special_tokens(tiny, family):
    reserved = tiny(family).reserved_text
    assert IMAGE_PLACEHOLDER in reserved
    assert {"<s>", "</s>", "<pad>"} <= set(reserved)  # the tokenizer's special tokens
    assert set(FAMILY_MARKUP.get(family, ())) <= set(reserved)
    assert all(text.strip() for text in reserved)


def test_qwen_vl_reserves_its_image_tags():
    # its remote tokenizer reads <img>PATH</img> as an image file to open
    assert {"<img>", "</img>", "<box>", "<ref>"} <= set(QwenVLAdapter.reserved_markup)


@pytest.mark.parametrize("family", ["llama", "llava", "qwen2-vl"])
def test_token_counts_match_encode(tiny, tiny_prompts, family):
    adapter = tiny(family)
    prompts = tiny_prompts(family)
    expected = [int(adapter.encode([p])["attention_mask"].sum()) for p in prompts]
    assert adapter.token_counts(prompts, batch_size=2) == expected


def test_token_counts_include_image_tokens(tiny):
    adapter = tiny("llava")
    text_only = adapter.token_counts([Prompt("what is it? Answer:")])[0]
    with_image = adapter.token_counts([Prompt("<image>what is it? Answer:", (tiny_image(0),))])[0]
    assert with_image - text_only >= 16  # LLaVA's 16 image tokens (the placeholder itself among them)
