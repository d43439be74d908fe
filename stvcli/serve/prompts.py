"""Chat messages -> one neutral ``Prompt``, laid out the way ``stv`` lays out a task prompt.

A task prompt (``stvcli.data.tasks.TemplateTask``) is an optional instruction, one
block per demonstration (the question with its answer after a space: ``cat: cats``)
and the query block (the question alone: ``dog:``), joined by newlines. A few-shot chat
(user question, assistant answer, ..., user question) is rendered back into exactly
that text (no chat template here; the adapter applies its own when its
``use_chat_template`` is on, wrapping the whole text as one user turn):

- an assistant message that directly follows a user message completes that user's
  block: the two texts are joined by one space, unless the user text already ends
  with whitespace or the answer starts with it (lm-evaluation-harness's
  ``maybe_delimit``), so ``user "cat:"`` + ``assistant "cats"`` is ``cat: cats``;
- every other message (system or developer instructions, a user message after a
  user message, an assistant message after anything but a user message) is a block
  of its own;
- blocks are joined with a newline (``SEPARATOR`` of the tasks); messages without
  content are skipped; role names are never written.

So ``[user "cat:", assistant "cats", user "dog:"]`` is ``cat: cats\ndog:``, and a system
message comes first as the instruction line. Inside one message the parts are
concatenated as they come, and every ``image_url`` part becomes an ``<image>``
placeholder at its position, its image appended to the prompt's images in the same
order: ``[{"type": "image_url", ...}, {"type": "text", "text": "Question: ..."}]`` gives
``"<image>Question: ..."``, exactly the prompt ``stv eval`` builds for that item when
the text matches the task's template.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from PIL import Image

from stvcli.prompt import IMAGE_PLACEHOLDER, Prompt, reserved_in
from stvcli.serve.errors import bad_request
from stvcli.serve.images import load_image
from stvcli.serve.schema import Message, TextPart

MESSAGE_SEPARATOR = "\n"  # between blocks, as stvcli.data.tasks.SEPARATOR
ANSWER_DELIMITER = " "  # between a question and its answer in one block


async def build_prompt(messages: Sequence[Message], *, max_image_bytes: int, allow_remote_images: bool,
                       reserved: Collection[str] = (IMAGE_PLACEHOLDER,)) -> Prompt:
    """The neutral prompt of a chat (see the module doc for the layout): text parts
    joined, each image part an ``<image>`` slot. Text holding a ``reserved`` string (the
    placeholder, the model's image or special tokens: ``ModelAdapter.reserved_text``)
    is refused with a 400."""
    blocks: list[str] = []
    images: list[Image.Image] = []
    open_question = False  # the last block is a user message no answer has joined yet
    for i, message in enumerate(messages):
        content = message.content
        if content is None:
            continue
        if isinstance(content, str):
            _check_text(content, f"messages.{i}.content", reserved)
            text = content
        else:
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
            text = "".join(pieces)
        if message.role == "assistant" and open_question:
            blocks[-1] = join_answer(blocks[-1], text)
            open_question = False
        else:
            blocks.append(text)
            open_question = message.role == "user"
    return Prompt(MESSAGE_SEPARATOR.join(blocks), tuple(images))


def join_answer(question: str, answer: str) -> str:
    """``question`` and its ``answer`` as one block: a space between them unless either
    side of the join is already whitespace (or empty)."""
    if not question or not answer:
        return question + answer
    if question[-1].isspace() or answer[0].isspace():
        return question + answer
    return question + ANSWER_DELIMITER + answer


def _check_text(text: str, param: str, reserved: Collection[str]) -> None:
    found = reserved_in(text, reserved)
    if found is not None:
        raise bad_request(f"text may not contain {found!r} (reserved for images and special tokens); send images "
                          "as image_url parts", param=param)
