"""Family adapters: image tokens, text-only prompts, chat templates, answers, Qwen-VL paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from stvcli.errors import ModelError
from stvcli.models.qwen_vl import QwenVLAdapter
from stvcli.prompt import Prompt
from stvcli.testing.tiny import TINY_FAMILIES, VISION_FAMILIES, build_tiny, tiny_adapter, tiny_image

#: Image tokens per image in the tiny models (see stvcli.testing.tiny).
IMAGE_TOKENS = {"idefics2": 8, "idefics3": 4, "qwen2-vl": 4, "qwen2.5-vl": 4, "llava": 16}
RAW_IMAGE_TEXT = {
    "idefics2": "<image>",
    "idefics3": "<image>",
    "llava": "<image>",
    "qwen2-vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2.5-vl": "<|vision_start|><|image_pad|><|vision_end|>",
}


def image_token_id(adapter) -> int:
    config = adapter.model.config
    return int(getattr(config, "image_token_id", None) or config.image_token_index)


@pytest.mark.parametrize("family", VISION_FAMILIES)
def test_images_expand_to_the_models_token_count(family, tiny):
    adapter = tiny(family)
    assert adapter.render_text("a <image> b", 1) == f"a {RAW_IMAGE_TEXT[family]} b"
    prompts = [Prompt("one <image> end", (tiny_image(1),)), Prompt("<image> and <image>", (tiny_image(2), tiny_image(3)))]
    inputs = adapter.encode(prompts)
    counts = (inputs["input_ids"] == image_token_id(adapter)).sum(1).tolist()
    assert counts == [IMAGE_TOKENS[family], 2 * IMAGE_TOKENS[family]]
    with torch.no_grad():
        logits = adapter.model(**inputs).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_text_only_prompts_work_everywhere(family, tiny):
    adapter = tiny(family)
    inputs = adapter.encode([Prompt("Input: hot Output:"), Prompt("cold")])
    assert "pixel_values" not in inputs
    assert inputs["attention_mask"][1, 0] == 0  # left padded
    with torch.no_grad():
        assert adapter.model(**inputs).logits.shape[:2] == inputs["input_ids"].shape


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_qwen_batches_carry_mm_token_type_ids(family, tiny):
    adapter = tiny(family)
    text_only = adapter.encode([Prompt("just text")])
    assert torch.equal(text_only["mm_token_type_ids"], torch.zeros_like(text_only["input_ids"]))
    inputs = adapter.encode([Prompt("see <image> here", (tiny_image(),)), Prompt("none")])
    expected = (inputs["input_ids"] == image_token_id(adapter)).long()
    assert torch.equal(inputs["mm_token_type_ids"], expected)


def test_text_adapter_rejects_images(tiny):
    with pytest.raises(ModelError, match="text-only"):
        tiny("llama").encode([Prompt("<image>", (tiny_image(),))])


@pytest.mark.parametrize("family", ["llama", "idefics2", "qwen2-vl"])
def test_encode_with_answers_puts_answer_last(family, tiny):
    adapter = tiny(family)
    images = (tiny_image(),) if family in VISION_FAMILIES else ()
    text = "Question: colour of <image>? Answer:" if images else "Question: colour? Answer:"
    prompts = [Prompt(text, images), Prompt("Input: hot Output:")]
    inputs, n_answer = adapter.encode_with_answers(prompts, [" red", " cold and more"])
    for row, answer in enumerate([" red", " cold and more"]):
        tail = inputs["input_ids"][row, -int(n_answer[row]) :]
        assert adapter.tokenizer.decode(tail) == answer


CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_chat_template_renders_images_and_answers_after_it():
    model, processor = build_tiny("qwen2-vl")
    processor.chat_template = CHAT
    from stvcli.models.registry import adapter_for

    adapter = adapter_for(model, processor, "chat")
    assert adapter.use_chat_template  # the family default, honoured since a template exists
    rendered = adapter.render_text("look <image> now", 1)
    assert rendered == (
        "<|im_start|>user\nlook <|vision_start|><|image_pad|><|vision_end|> now<|im_end|>\n<|im_start|>assistant\n"
    )
    inputs, n_answer = adapter.encode_with_answers([Prompt("look <image> now", (tiny_image(),))], [" red"])
    ids = inputs["input_ids"][0]
    assert adapter.tokenizer.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n red")
    assert adapter.tokenizer.decode(ids[-int(n_answer[0]) :]) == " red"
    raw = adapter_for(model, processor, "raw", use_chat_template=False)
    assert raw.render_text("look <image> now", 1) == "look <|vision_start|><|image_pad|><|vision_end|> now"


def test_missing_chat_template_default_falls_back_explicit_fails():
    assert tiny_adapter("idefics2").use_chat_template is False  # default True, no template shipped
    with pytest.raises(ModelError, match="chat template"):
        tiny_adapter("idefics2", use_chat_template=True)
    with pytest.raises(ModelError, match="chat template"):
        tiny_adapter("llama", use_chat_template=True)


def test_idefics_image_splitting_is_forced_off():
    model, processor = build_tiny("idefics2")
    processor.image_processor.do_image_splitting = True
    from stvcli.models.registry import adapter_for

    adapter = adapter_for(model, processor, "split")
    assert processor.image_processor.do_image_splitting is False
    inputs = adapter.encode([Prompt("<image>", (tiny_image(),))])
    assert int((inputs["input_ids"] == image_token_id(adapter)).sum()) == IMAGE_TOKENS["idefics2"]


def test_llava_fills_in_missing_patch_size():
    model, processor = build_tiny("llava")
    processor.patch_size = None
    processor.vision_feature_select_strategy = None
    from stvcli.models.registry import adapter_for

    adapter = adapter_for(model, processor, "old-llava")
    assert processor.patch_size == 8 and processor.num_additional_image_tokens == 1
    inputs = adapter.encode([Prompt("<image> cat", (tiny_image(),))])
    assert int((inputs["input_ids"] == image_token_id(adapter)).sum()) == IMAGE_TOKENS["llava"]
    with torch.no_grad():
        adapter.model(**inputs)


def test_qwen_vl_writes_images_to_paths_in_img_tags(tmp_path):
    """Qwen-VL's remote code is not available here: check the prompt side on a stand-in model."""
    model, tokenizer = build_tiny("llama")
    adapter = QwenVLAdapter(model, tokenizer, "qwen-vl-standin")
    assert adapter.n_layers == 2
    image = tiny_image(7)
    inputs = adapter.encode([Prompt("Describe <image> please", (image,)), Prompt("no image")])
    text = adapter.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True)
    match = re.fullmatch(r"Describe Picture 1:<img>(.+\.png)</img>\n please", text)
    assert match, text
    with Image.open(Path(match[1])) as saved:
        assert saved.tobytes() == image.tobytes()


@pytest.mark.parametrize("family", ["llama", "idefics3"])
def test_template_bos_is_not_doubled(family):
    model, processor = build_tiny(family)
    template = "<s>{% for m in messages %}U: {{ m['content'] if m['content'] is string else 'x' }}{% endfor %}A:"
    processor.chat_template = template
    if hasattr(processor, "tokenizer"):
        processor.tokenizer.chat_template = template
    from stvcli.models.registry import adapter_for

    adapter = adapter_for(model, processor, "bos", use_chat_template=True)
    ids = adapter.encode([Prompt("hello")])["input_ids"][0].tolist()
    bos = adapter.tokenizer.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
