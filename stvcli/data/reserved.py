"""Item text cannot inject image placeholders or special tokens into prompts.

A literal ``<image>`` in a question would make the prompt hold more image slots than
images (the processor then fails); a family's image or special tokens
(``<fake_token_around_image>``, ``<|image_pad|>``, ``<|im_start|>``, Qwen-VL's
``<img>``, ...) would be read as markup. Such items are refused with a DataError naming
the item, the field and the string, for text models too (``<image>`` is the neutral
prompt's image slot whatever the model). Stages check before building any prompt
(``stvcli.stages.common.check_inputs``); the strings come from
``ModelAdapter.reserved_text``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from stvcli.data.types import Item
from stvcli.errors import DataError
from stvcli.prompt import IMAGE_PLACEHOLDER, reserved_in


def prompt_texts(item: Item) -> Iterator[tuple[str, str]]:
    """(field, text) of every piece of an item's text that prompts show: the question, the
    answer demonstrations show, and an episode's class names."""
    if item.question is not None:
        yield "question", item.question
    if "target" in item.fields or item.answers:
        yield "answer", item.answer
    for choice in item.fields.get("choices", ()):
        yield "class name", str(choice)


def check_item_text(items: Iterable[Item], reserved: Iterable[str] = (IMAGE_PLACEHOLDER,)) -> None:
    """Raise a DataError for the first item whose prompt text holds a reserved string."""
    strings = tuple(reserved)
    seen: set[int] = set()
    for item in items:
        if id(item) in seen:  # the same item again (bank contexts repeat their queries)
            continue
        seen.add(id(item))
        for field, text in prompt_texts(item):
            found = reserved_in(text, strings)
            if found is not None:
                raise DataError(
                    f"item {item.uid}'s {field} contains {found!r}, which the model reserves for images or "
                    "special tokens; remove it from that item in the data (or drop the item)"
                )
