"""The model's tokenizer as the server shows it: ``/tokenizer_info``, ``/tokenize``,
``/detokenize`` (vLLM's shapes, which lm-evaluation-harness's remote tokenizer reads),
the prompts of ``/v1/completions`` turned into token ids, and token ids turned back
into per-token strings for ``logprobs``.

Checks. Text (a completions prompt, a ``/tokenize`` prompt) may not hold a reserved
string (``ModelAdapter.reserved_text``: the ``<image>`` placeholder, image markup, special
tokens such as ``<s>`` or ``<|im_start|>``), as in chat messages; the one exception is
a ``/tokenize`` prompt that IS one special token (the harness asks for the ids of the
EOS and BOS strings that way). Token ids must lie inside the tokenizer's vocabulary and
may not be the model's image or video markup (the completions route takes no images,
and some models act on such ids: Qwen-VL's forward reads the bytes between its
``<img>`` and ``</img>`` ids as a file path or URL and opens it); BOS, EOS, padding and
other special tokens are allowed as ids: a client sending ids chose them. Every tokenizer call holds the server's encode lock (the tokenizer is
not safe to call from two threads at once); callers run them off the event loop.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from stvcli.models.base import _PROCESSOR_TOKENS, ModelAdapter, chat_template_of
from stvcli.prompt import IMAGE_PLACEHOLDER, reserved_in
from stvcli.serve.errors import bad_request
from stvcli.serve.generation import _eos_ids
from stvcli.serve.logprobs import TokenLogprob

#: Tokens of context decoded with a token to find its text (enough for a character
#: split over several byte tokens, and for tokenizers that drop a first token's space).
PIECE_WINDOW = 6
#: Model config fields that name image or video token ids, across families.
_IMAGE_ID_FIELDS = (
    "image_token_id", "image_token_index", "video_token_id", "video_token_index", "vision_start_token_id",
    "vision_end_token_id", "vision_token_id", "boi_token_id", "eoi_token_id", "boi_token_index", "eoi_token_index",
    "image_start_token_id", "image_end_token_id",
)  # fmt: skip


class Tokens:
    def __init__(self, adapter: ModelAdapter, served_as: str, lock: threading.Lock) -> None:
        self.adapter = adapter
        self.tokenizer = adapter.tokenizer
        self.lock = lock
        self.reserved = adapter.reserved_text
        with lock:
            self.vocab_size = len(self.tokenizer)
            self.image_ids = image_token_ids(adapter)
            self._info = self._describe(served_as)
            specials = {str(t) for t in _get(self.tokenizer, "all_special_tokens") or ()}
            specials.update(self._info[name] for name in ("bos_token", "eos_token", "pad_token", "unk_token"))
            self.specials = frozenset(text for text in specials if text)

    # ------------------------------------------------------------------ routes
    def info(self) -> dict[str, Any]:
        """``GET /tokenizer_info``: what a client needs instead of the hub tokenizer."""
        return dict(self._info)

    def tokenize(self, text: str, add_special_tokens: bool, param: str = "prompt") -> list[int]:
        """``POST /tokenize``: ``text``'s token ids (a special token's string alone gives its id)."""
        if text not in self.specials:
            self.check_text(text, param)
        with self.lock:
            return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def detokenize(self, ids: Sequence[int], param: str = "tokens") -> str:
        """``POST /detokenize``: the text of ``ids``, special tokens written out."""
        self.check_range(ids, param)
        with self.lock:
            return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ------------------------------------------------------------------ completions
    def encode_prompts(self, prompts: Sequence[str] | Sequence[Sequence[int]], max_chars: int | None,
                       context: int) -> list[list[int]]:
        """The token ids of each completions prompt: text through the tokenizer (its own
        special tokens, such as BOS, added as ``stv`` adds them; no chat template), ids as
        they are. 400 for reserved text, text longer than the context could hold, bad ids
        or a prompt of no tokens."""
        out: list[list[int]] = []
        for i, prompt in enumerate(prompts):
            param = "prompt" if len(prompts) == 1 else f"prompt.{i}"
            if isinstance(prompt, str):
                self.check_text(prompt, param)
                if max_chars is not None and len(prompt) > max_chars:
                    raise bad_request(f"the prompt's {len(prompt)} characters are more than this model's context of "
                                      f"{context} tokens can hold", param=param, code="context_length_exceeded")
                with self.lock:
                    ids = list(self.tokenizer(prompt)["input_ids"])
            else:
                ids = list(prompt)
                self.check_ids(ids, param)
            if not ids:
                raise bad_request("the prompt encodes to no tokens", param=param)
            out.append(ids)
        return out

    def check_text(self, text: str, param: str) -> None:
        found = reserved_in(text, self.reserved)
        if found is not None:
            raise bad_request(f"text may not contain {found!r} (reserved for images and special tokens); send "
                              "special tokens as token ids", param=param)

    def check_range(self, ids: Sequence[int], param: str) -> None:
        bad = next((i for i, token in enumerate(ids) if token >= self.vocab_size), None)
        if bad is not None:
            raise bad_request(f"token id {ids[bad]} is outside the vocabulary of {self.vocab_size} tokens",
                              param=f"{param}.{bad}")

    def check_ids(self, ids: Sequence[int], param: str) -> None:
        self.check_range(ids, param)
        bad = next((i for i, token in enumerate(ids) if token in self.image_ids), None)
        if bad is not None:
            raise bad_request(f"token id {ids[bad]} is one of the model's image tokens; /v1/completions takes text "
                              "only (send images to /v1/chat/completions)", param=f"{param}.{bad}")

    def pieces(self, ids: Sequence[int], start: int = 0,
               alternatives: Sequence[TokenLogprob | None] | None = None) -> tuple[list[str], list[dict[str, float] | None]]:
        """The text of each token of ``ids[start:]`` in the context of the ids before it, and
        (with ``alternatives``, one per token) each token's top alternatives keyed by their
        text in the same context (a text two ids share keeps the higher log-probability)."""
        ids = list(ids)
        texts: list[str] = []
        tops: list[dict[str, float] | None] = []
        with self.lock:
            for i in range(start, len(ids)):
                context = ids[max(0, i - PIECE_WINDOW): i]
                before = self._decode(context)
                texts.append(_added(before, self._decode([*context, ids[i]])))
                if alternatives is None:
                    continue
                entry = alternatives[i - start]
                if entry is None:
                    tops.append(None)
                    continue
                top: dict[str, float] = {}
                for token, logprob in entry.top:
                    top.setdefault(_added(before, self._decode([*context, token])), logprob)
                tops.append(top)
        return texts, tops

    def decode(self, ids: Sequence[int]) -> str:
        with self.lock:
            return self._decode(list(ids))

    # ------------------------------------------------------------------ helpers
    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _describe(self, served_as: str) -> dict[str, Any]:
        tokenizer = self.tokenizer

        def special(name: str) -> tuple[str | None, int | None]:
            text, token_id = _get(tokenizer, f"{name}_token"), _get(tokenizer, f"{name}_token_id")
            return (None if text is None else str(text)), (token_id if isinstance(token_id, int) else None)

        (bos, bos_id), (eos, eos_id), (pad, pad_id), (unk, unk_id) = (special(n) for n in ("bos", "eos", "pad", "unk"))
        if eos_id is None and _eos_ids(self.adapter):  # a tokenizer that names no EOS (Qwen-VL's): the model's
            eos_id = min(_eos_ids(self.adapter))
        if eos is None and eos_id is not None:
            eos = self._decode([eos_id])
        adds_bos = bos_id is not None and list(tokenizer("a")["input_ids"][:1]) == [bos_id]
        template = _get(tokenizer, "chat_template") or chat_template_of(self.adapter)
        return {
            "tokenizer_class": type(tokenizer).__name__,
            "name_or_path": served_as,  # the served name, never a local path
            "model_max_length": self.adapter.context_length,
            "vocab_size": self.vocab_size,
            "bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": unk,
            "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id, "unk_token_id": unk_id,
            "add_bos_token": adds_bos,
            "chat_template": template if isinstance(template, (str, dict)) else None,
        }


def _added(before: str, after: str) -> str:
    """The text ``after`` adds to ``before`` (decoding is not always additive: a completed
    multi-byte character replaces the stand-in of its first bytes)."""
    if after.startswith(before):
        return after[len(before):]
    return after[len(os.path.commonprefix([before, after])):]


def image_token_ids(adapter: ModelAdapter) -> frozenset[int]:
    """Ids of the model's image and video markup: the ``<image>`` placeholder, its
    processor's image tokens and the family's reserved markup where the tokenizer has
    them as one token, the image/video token ids its configs name, and Qwen-VL's
    ``<img>``, ``</img>``, ``<imgpad>`` (``config.visual["image_start_id"]`` and the two
    after it); never the tokenizer's or the model's BOS, EOS, padding or unknown token."""
    tokenizer = adapter.tokenizer
    strings = {IMAGE_PLACEHOLDER, *adapter.reserved_markup}
    for name in _PROCESSOR_TOKENS:
        value = getattr(adapter.processor, name, None)
        value = getattr(value, "content", value)
        if isinstance(value, str):
            strings.add(value)
    ids = {token_id for token_id in (_token_id(tokenizer, text) for text in strings) if token_id is not None}
    for config in (adapter.model.config, adapter.text_config):
        for name in _IMAGE_ID_FIELDS:
            value = getattr(config, name, None)
            if _is_id(value):
                ids.add(value)
        visual = getattr(config, "visual", None)
        start = visual.get("image_start_id") if isinstance(visual, dict) else None
        if _is_id(start):
            ids.update((start, start + 1, start + 2))
    text = {_get(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad", "unk")} | _eos_ids(adapter)
    return frozenset(ids - text)


def _token_id(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` when the tokenizer has it as one token (else None)."""
    try:
        value = tokenizer.convert_tokens_to_ids(text)
    except Exception:  # noqa: BLE001 - tokenizers refuse unknown tokens in their own ways
        return None
    return value if _is_id(value) and value != _get(tokenizer, "unk_token_id") else None


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _get(obj: Any, name: str) -> Any:
    """``obj.name``, or None (some remote-code tokenizers raise on special-token properties)."""
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001
        return None
