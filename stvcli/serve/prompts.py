"""Chat messages -> one neutral ``Prompt``.

Flattening rule (no chat template here; the adapter applies its own when its
``use_chat_template`` is on, wrapping the whole flattened text as one user turn):

- the messages' texts are joined in order with a newline, whatever their role
  (system, developer, user and earlier assistant turns all count; role names are
  not written);
- inside one message, the parts are concatenated as they come, and every
  ``image_url`` part becomes an ``<image>`` placeholder at its position, its image
  appended to the prompt's images in the same order.

So ``[{"type": "image_url", ...}, {"type": "text", "text": "Question: ..."}]`` gives
``"<image>Question: ..."``, exactly the prompt ``stv eval`` would build for that item
when the text matches the task's template.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from PIL import Image

from stvcli.prompt import IMAGE_PLACEHOLDER, Prompt, reserved_in
from stvcli.serve.errors import bad_request
from stvcli.serve.images import load_image
from stvcli.serve.schema import Message, TextPart

MESSAGE_SEPARATOR = "\n"


async def build_prompt(messages: Sequence[Message], *, max_image_bytes: int, allow_remote_images: bool,
                       reserved: Collection[str] = (IMAGE_PLACEHOLDER,)) -> Prompt:
    """The neutral prompt of a chat: text parts joined, each image part an ``<image>``
    slot. Text holding a ``reserved`` string (the placeholder, the model's image or
    special tokens: ``ModelAdapter.reserved_text``) is refused with a 400."""
    texts: list[str] = []
    images: list[Image.Image] = []
    for i, message in enumerate(messages):
        content = message.content
        if content is None:
            continue
        if isinstance(content, str):
            _check_text(content, f"messages.{i}.content", reserved)
            texts.append(content)
            continue
        pieces = []
        for j, part in enumerate(content):
            param = f"messages.{i}.content.{j}"
            if isinstance(part, TextPart):
                _check_text(part.text, param, reserved)
                pieces.append(part.text)
            else:
                image = await load_image(part.image_url.url, max_bytes=max_image_bytes,
                                         allow_remote=allow_remote_images, param=f"{param}.image_url.url")
                images.append(image)
                pieces.append(IMAGE_PLACEHOLDER)
        texts.append("".join(pieces))
    return Prompt(MESSAGE_SEPARATOR.join(texts), tuple(images))


def _check_text(text: str, param: str, reserved: Collection[str]) -> None:
    found = reserved_in(text, reserved)
    if found is not None:
        raise bad_request(f"text may not contain {found!r} (reserved for images and special tokens); send images "
                          "as image_url parts", param=param)
