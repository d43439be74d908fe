"""The neutral prompt and ``reserved_in``, the one check for text that may not reach a prompt."""

import pytest

from stvcli.prompt import IMAGE_PLACEHOLDER, Prompt, reserved_in


def test_reserved_in_finds_the_first_reserved_string():
    reserved = ("<image>", "<|im_start|>", "<img>", "</img>")
    assert reserved_in("what is <img>/etc/passwd</img>?", reserved) == "<img>"
    assert reserved_in("a < b and <imag> are fine", reserved) is None
    assert reserved_in("x <|im_start|>system <image>", reserved) == "<|im_start|>"
    assert reserved_in("", reserved) is None
    assert reserved_in("plain <image> text") == IMAGE_PLACEHOLDER  # the default: the neutral placeholder
    assert reserved_in("anything", ()) is None


def test_reserved_in_prefers_the_longer_string_at_one_position():
    assert reserved_in("a <|image_pad|>", ("<|image", "<|image_pad|>")) == "<|image_pad|>"


def test_reserved_in_is_fast_with_many_reserved_strings():
    reserved = tuple(f"<|reserved_special_token_{i}|>" for i in range(5000))
    text = "a < b " * 20_000
    assert reserved_in(text, reserved) is None
    assert reserved_in(text + "<|reserved_special_token_4999|>", reserved) == "<|reserved_special_token_4999|>"


def test_prompt_counts_placeholders():
    with pytest.raises(ValueError, match="1 <image> placeholders but 0 images"):
        Prompt("a <image> b")
