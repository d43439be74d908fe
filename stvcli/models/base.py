"""The model adapter: one loaded Hugging Face model seen the same way for every family.

An adapter knows how to turn neutral prompts into model inputs (left padded, on the
model's device), where the decoder's attention output projections are, and the
head geometry (n_layers, n_heads, head_dim). Family subclasses override
``render_text`` and ``_encode_batch``; everything else is shared.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from stvcli.errors import ModelError
from stvcli.prompt import IMAGE_PLACEHOLDER, Prompt

#: Leaf names of a decoder layer's attention output projection, across families (Llama
#: ``o_proj``, GPT-2 / Qwen-VL ``c_proj``, OPT / GPT-J / MPT ``out_proj``, GPT-NeoX /
#: Falcon / Bloom / Phi ``dense``, T5-style ``wo``). Only one inside an attention block counts.
_PROJECTION_NAMES = ("o_proj", "c_proj", "out_proj", "dense", "wo")
#: A module inside numbered decoder layers: ``layers.N`` / ``h.N`` / ``blocks.N``, under any
#: prefix (``model.layers.N``, ``model.decoder.layers.N``, ``transformer.h.N``, ...).
_LAYER_STACK = re.compile(r"^(?P<stack>(?:.+\.)?(?:layers|h|blocks))\.(?P<index>\d+)\.(?P<inner>.+)$")
#: A module name that is an attention block (attn, self_attn, attention, self_attention, SelfAttention, ...).
_ATTENTION_BLOCK = re.compile(r"attn|attention", re.IGNORECASE)
#: Config attributes for the query-head count and the model width, in the order tried.
_HEAD_COUNT_NAMES = ("num_attention_heads", "n_head", "n_heads", "num_heads")
_HIDDEN_SIZE_NAMES = ("hidden_size", "n_embd", "d_model")
#: Processor attributes that hold image/video markup strings (families differ in which they have).
_PROCESSOR_TOKENS = (
    "image_token", "fake_image_token", "global_image_tag", "global_image_token", "video_token", "boi_token",
    "eoi_token", "image_start_token", "image_end_token", "vision_start_token", "vision_end_token",
    "end_of_utterance_token",
)  # fmt: skip


class ModelAdapter:
    """Wraps ``model`` (a transformers PreTrainedModel) and its processor or tokenizer."""

    family: ClassVar[str] = "text"
    architectures: ClassVar[tuple[str, ...]] = ()
    #: Whether prompts are wrapped in the chat template by default.
    chat_template_default: ClassVar[bool] = False
    #: Whether a cached prompt prefix + a step over the rest equals the full forward
    #: (checked by tests for the family); ``stvcli.prefix`` uses the full forward otherwise.
    prefix_sharing: bool = False
    #: Markup the family's tokenizer or processor gives a meaning to that its special
    #: tokens do not list (e.g. Qwen-VL's ``<img>...</img>``); see ``reserved_text``.
    reserved_markup: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        name: str,
        *,
        projection_pattern: str | None = None,
        use_chat_template: bool | None = None,
        revision: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.revision = revision
        self.use_chat_template = self.chat_template_default if use_chat_template is None else use_chat_template
        tokenizer = self.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.projections: list[nn.Module] = self._resolve_projections(projection_pattern)
        self.n_layers = len(self.projections)
        self.n_heads, self.head_dim = self._head_geometry()

    # ------------------------------------------------------------------ geometry
    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def text_config(self) -> Any:
        config = self.model.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def context_length(self) -> int:
        return int(getattr(self.text_config, "max_position_embeddings", 0) or 2048)

    def decoder(self) -> nn.Module:
        """The language decoder (the module whose ``.layers`` hold the attention blocks)."""
        return self.model.get_decoder()

    def _resolve_projections(self, pattern: str | None) -> list[nn.Module]:
        """The attention output projection of every decoder layer, in layer order."""
        if pattern is not None:
            return _projections_by_pattern(self.model, pattern)
        return discover_projections(self.decoder(), self.name, config=self.text_config)

    def _head_geometry(self) -> tuple[int, int]:
        """(query heads, head_dim): the head count from the config, head_dim from the
        projection's input width (the config's head_dim where it agrees)."""
        n_heads, head_dim = config_geometry(self.text_config)
        if n_heads is None:
            raise ModelError(
                f"{self.name}: the config names no attention head count ({'/'.join(_HEAD_COUNT_NAMES)})"
            )
        widths = {projection_input_width(p) for p in self.projections}
        if len(widths) != 1 or None in widths:
            raise ModelError(
                f"{self.name}: the attention output projections differ in input width ({sorted(map(str, widths))}); "
                "pass --projection-pattern matching one projection per layer"
            )
        (width,) = widths
        assert width is not None
        if head_dim is None or n_heads * head_dim != width:
            if width % n_heads:
                raise ModelError(f"{self.name}: o_proj input width {width} is not n_heads={n_heads} x head_dim")
            head_dim = width // n_heads  # e.g. MLA: the value head width, not the config's head_dim
        return n_heads, int(head_dim)

    # ------------------------------------------------------------------ prompts
    @property
    def reserved_text(self) -> tuple[str, ...]:
        """Strings user text may not contain (``stvcli.prompt.reserved_in`` finds them).

        The neutral ``<image>`` placeholder (for every model: the prompt format counts it
        as an image slot), the tokenizer's special tokens (BOS/EOS, chat turns, image pads,
        ...), the processor's image tokens and the family's ``reserved_markup``.
        """
        cached = self.__dict__.get("_reserved_text")
        if cached is None:
            cached = self.__dict__["_reserved_text"] = tuple(sorted(self._reserved_strings()))
        return cached

    def _reserved_strings(self) -> set[str]:
        found = {IMAGE_PLACEHOLDER, *self.reserved_markup}
        tokenizer = self.tokenizer
        found.update(str(token) for token in getattr(tokenizer, "all_special_tokens", None) or ())
        decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
        found.update(str(token.content) for token in decoder.values() if getattr(token, "special", False))
        for name in _PROCESSOR_TOKENS:
            value = getattr(self.processor, name, None)
            value = getattr(value, "content", value)  # AddedToken or str
            if isinstance(value, str):
                found.add(value)
        # a one- or two-character "special token" would forbid ordinary text; none of the families has one
        return {text for text in found if len(text.strip()) >= 3}

    def render_text(self, text: str, n_images: int) -> str:
        """The prompt string the processor sees: chat template and image tokens applied."""
        if n_images:
            raise ModelError(f"{self.name} is a text-only model; the prompt has {n_images} image(s)")
        if self.use_chat_template:
            messages = [{"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text

    def _encode_batch(self, texts: list[str], images: list[list[Any]]) -> dict[str, torch.Tensor]:
        """Processor call for one batch of rendered texts; text-only by default."""
        return dict(self.tokenizer(texts, padding=True, return_tensors="pt"))

    def encode(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        """Left-padded model inputs for ``prompts``, on the model's device.

        The last prompt token of every row is at position -1.
        """
        texts = [self.render_text(p.text, len(p.images)) for p in prompts]
        return self._encode_rendered(texts, prompts)

    def token_counts(self, prompts: Sequence[Prompt], batch_size: int = 16) -> list[int]:
        """Each prompt's length in tokens as the model would see it (chat template and image
        tokens included), from the processor alone: no forward, nothing moved to the device."""
        counts: list[int] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            texts = [self.render_text(p.text, len(p.images)) for p in chunk]
            inputs = self._encode_batch(texts, [list(p.images) for p in chunk])
            counts += [int(n) for n in inputs["attention_mask"].sum(1).tolist()]
        return counts

    def _encode_rendered(self, texts: list[str], prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        inputs = self._encode_batch(texts, [list(p.images) for p in prompts])
        return {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}

    def encode_with_answers(
        self, prompts: Sequence[Prompt], answers: Sequence[str]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inputs for prompt+answer (left padded) and the answer token count per row [B].

        The answer's tokens are the last ``n[b]`` positions of row b; the last prompt
        token is at position ``-(n[b] + 1)``.
        """
        # The answer follows the RENDERED prompt: with a chat template it belongs after the
        # generation prompt (the assistant turn), not inside the user message.
        rendered = [self.render_text(p.text, len(p.images)) for p in prompts]
        full = [text + answer for text, answer in zip(rendered, answers, strict=True)]
        prompt_inputs = self._encode_rendered(rendered, prompts)
        full_inputs = self._encode_rendered(full, prompts)
        prompt_lengths = prompt_inputs["attention_mask"].sum(1)
        full_lengths = full_inputs["attention_mask"].sum(1)
        n_answer = (full_lengths - prompt_lengths).cpu()
        if bool((n_answer < 1).any()):
            raise ValueError("an answer encodes to no tokens")
        return full_inputs, n_answer

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> dict[str, Any]:
        """What an artifact must match to be used with this model."""
        architecture = (getattr(self.model.config, "architectures", None) or [type(self.model).__name__])[0]
        return {
            "architecture": architecture,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "head_dim": self.head_dim,
            "weights": self.weight_hash(),
        }

    def weight_hash(self) -> str:
        """A cheap content hash of the decoder's attention projections (first/last layer)."""
        digest = hashlib.sha256()
        for module in (self.projections[0], self.projections[-1]):
            weight = module.weight.detach()
            flat = weight.reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes()
            digest.update(sample)
        if self.revision:
            digest.update(self.revision.encode())
        return digest.hexdigest()[:16]


def projection_input_width(module: nn.Module) -> int | None:
    """The input width of a projection module, or None if it is not one.

    ``nn.Linear`` (and subclasses, quantized ones included): ``in_features``;
    transformers' ``Conv1D`` (GPT-2; weight stored [in, out]): the weight's rows; any
    other module with a 2-D weight: its ``in_features`` if it has one, else the weight's
    columns (the ``nn.Linear`` layout).
    """
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        return None
    if _is_conv1d(module):
        return int(weight.shape[0])
    in_features = getattr(module, "in_features", None)
    if isinstance(in_features, int) and not isinstance(in_features, bool):
        return in_features
    return int(weight.shape[1])


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` or a remote-code copy of it (weight [nx, nf])."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        Conv1D = ()  # noqa: N806
    if isinstance(module, Conv1D):
        return True
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(weight, torch.Tensor)
        and tuple(weight.shape) == (getattr(module, "nx", None), getattr(module, "nf", None))
    )


def _config_int(config: Any, names: Sequence[str]) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def config_geometry(config: Any) -> tuple[int | None, int | None]:
    """(query heads, head_dim) a (text) config declares; None for what it does not.

    Heads from num_attention_heads / n_head / n_heads / num_heads (the QUERY heads: GQA
    and MQA key/value head counts are never used); head_dim from ``head_dim``, else the
    width (hidden_size / n_embd / d_model) over the heads.
    """
    if config is None:
        return None, None
    n_heads = _config_int(config, _HEAD_COUNT_NAMES)
    head_dim = _config_int(config, ("head_dim",))
    if head_dim is None and n_heads is not None:
        hidden = _config_int(config, _HIDDEN_SIZE_NAMES)
        if hidden is not None and hidden % n_heads == 0:
            head_dim = hidden // n_heads
    return n_heads, head_dim


def _text_config_of(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        return config.get_text_config()
    return config


def discover_projections(model: nn.Module, name: str = "model", *, config: Any = None) -> list[nn.Module]:
    """The attention output projection of every decoder layer in ``model``, found by structure.

    A candidate is a projection module (``projection_input_width``: nn.Linear, GPT-2's
    Conv1D, any 2-D weight) named one of ``_PROJECTION_NAMES``, inside an attention block
    (a name with ``attn``/``attention``) of numbered layers (``layers.N``, ``h.N``,
    ``blocks.N``); so GPT-2's ``mlp.c_proj`` or GPT-NeoX's ``mlp.dense_4h_to_h`` never
    count. Where a layer or the tree has several candidates, those whose input width is
    n_heads x head_dim of ``config`` (default: the model's text config) are kept. Exactly
    one complete stack (layers 0..N-1, one projection each) must remain; otherwise a
    one-line ModelError naming ``--projection-pattern``.
    """
    if config is None:
        config = _text_config_of(model)
    n_heads, head_dim = config_geometry(config)
    width = n_heads * head_dim if n_heads is not None and head_dim is not None else None

    stacks: dict[str, dict[int, list[tuple[str, nn.Module]]]] = {}
    for module_name, module in model.named_modules():
        match = _LAYER_STACK.match(module_name)
        if match is None:
            continue
        *inside, leaf = match["inner"].split(".")
        if leaf not in _PROJECTION_NAMES or not any(_ATTENTION_BLOCK.search(part) for part in inside):
            continue
        if projection_input_width(module) is None:
            continue
        stacks.setdefault(match["stack"], {}).setdefault(int(match["index"]), []).append((module_name, module))

    how = "pass --projection-pattern (a regex over module names matching one projection per layer)"
    if not stacks:
        raise ModelError(
            f"{name}: found no decoder attention output projections ({'/'.join(_PROJECTION_NAMES)} inside an "
            f"attention block of layers.N, h.N or blocks.N); {how}"
        )
    complete: dict[str, list[nn.Module]] = {}
    problems: list[str] = []
    for stack, layers in stacks.items():
        n_layers = sum(child.isdigit() for child, _ in model.get_submodule(stack).named_children())
        if sorted(layers) != list(range(n_layers)):
            missing = sorted(set(range(n_layers)) - set(layers))
            problems.append(f"{stack} has no candidate in layer(s) {', '.join(map(str, missing[:4]))}")
            continue
        chosen = []
        for index in range(len(layers)):
            candidates = layers[index]
            if len(candidates) > 1 and width is not None:
                candidates = [c for c in candidates if projection_input_width(c[1]) == width]
            if len(candidates) != 1:
                names = ", ".join(n for n, _ in layers[index])
                detail = f"{len(candidates)} of width {width}" if width is not None else "no width to choose by"
                problems.append(f"{stack}.{index} has several candidates ({names}; {detail})")
                break
            chosen.append(candidates[0][1])
        else:
            complete[stack] = chosen
    if len(complete) > 1 and width is not None:
        fitting = {s: p for s, p in complete.items() if all(projection_input_width(m) == width for m in p)}
        complete = fitting or complete
    if not complete:
        raise ModelError(f"{name}: no unambiguous attention output projections ({'; '.join(problems)}); {how}")
    if len(complete) > 1:
        raise ModelError(
            f"{name}: attention output projections found under several stacks ({', '.join(sorted(complete))}); "
            "pass --projection-pattern to pick the language decoder's"
        )
    (projections,) = complete.values()
    return projections


def _projections_by_pattern(model: nn.Module, pattern: str) -> list[nn.Module]:
    regex = re.compile(pattern)
    matches = [
        (n, m) for n, m in model.named_modules() if regex.search(n) and projection_input_width(m) is not None
    ]
    if not matches:
        raise ModelError(f"--projection-pattern {pattern!r} matches no linear (or Conv1D) module")
    numbered = []
    for name, module in matches:
        numbers = re.findall(r"\.(\d+)\.", f".{name}.")
        if not numbers:
            raise ModelError(f"--projection-pattern {pattern!r} matched {name!r}, which has no layer number")
        numbered.append((int(numbers[-1]), name, module))
    numbered.sort(key=lambda t: t[0])
    if [n for n, _, _ in numbered] != list(range(len(numbered))):
        names = ", ".join(n for _, n, _ in numbered[:4])
        raise ModelError(f"--projection-pattern {pattern!r} is ambiguous (matched {names}, ...); make it match one module per layer")
    return [m for _, _, m in numbered]


def chat_template_of(adapter: ModelAdapter) -> str | None:
    """The chat template the adapter's processor or tokenizer ships, if any."""
    return getattr(adapter.processor, "chat_template", None) or getattr(adapter.tokenizer, "chat_template", None)


def settle_chat_template(adapter: ModelAdapter, requested: bool | None) -> None:
    """Keep ``use_chat_template`` only where a template exists.

    The family default (``requested`` None) quietly falls back to raw text; an explicit
    request for a template the model lacks is a ModelError.
    """
    if not adapter.use_chat_template or chat_template_of(adapter) is not None:
        return
    if requested:
        raise ModelError(f"{adapter.name} has no chat template; run without --chat-template or use a model that ships one")
    adapter.use_chat_template = False


def without_duplicate_bos(adapter: ModelAdapter, rendered: str) -> str:
    """Drop a template's leading BOS text when the tokenizer adds BOS itself (else BOS twice)."""
    tokenizer = adapter.tokenizer
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not rendered.startswith(bos):
        return rendered
    ids = tokenizer("x")["input_ids"]
    return rendered[len(bos) :] if ids and ids[0] == tokenizer.bos_token_id else rendered
