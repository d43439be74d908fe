"""Shared-prefix forwards: compute what every candidate has in common once (KV cache).

Insertion only touches the last prompt token and later positions, and attention is
causal, so everything before the last prompt token is the same for every candidate
vector set. Two users:

- the searches (STV and MTV) score S candidates x Q queries: each query's prompt minus
  its last token runs once with ``use_cache=True``; then ONE batched step runs the last
  prompt token (and, for the ``answer`` reward, the answer tokens) of every (query,
  candidate) row over a copy of that query's cache, with per-row vectors inserted
  (``answer_logprobs`` in ``stvcli.scoring``);
- the scan's many-shot passes: G queries that share one sampled set of demonstrations
  share the demonstration prefix (instruction + demonstrations); it is encoded once and
  each query's own block runs over its cache (``capture_shared``).

Both are exact rewrites of the full forward (same tokens, same positions, same masks);
tests compare them with the straightforward path on every tiny family. A family for
which that is not known to hold falls back to the straightforward path
(``can_share_prefix``); ``straightforward()`` forces the fallback everywhere (tests and
benchmarks use it as the reference).
"""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from stvcli.models.base import ModelAdapter
from stvcli.prompt import IMAGE_PLACEHOLDER, Prompt
from stvcli.scoring import model_kwargs, output_cache

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("stv_prefix_sharing", default=True)

# Tensors of the processor output that hold one value per token ([B, T]).
_IMAGE_TOKEN_ATTRIBUTES = ("image_token_id", "image_token_index", "video_token_id")
_SENTINEL = "\x1fstv-prefix\x1f"


@contextmanager
def straightforward() -> Iterator[None]:
    """Inside the block every stage runs the full forward per row (the reference path)."""
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def can_share_prefix(adapter: ModelAdapter) -> bool:
    """Whether the shared-prefix path is used for this adapter: its ``prefix_sharing`` flag
    (declared by its family), unless ``straightforward()`` is in force."""
    return _ENABLED.get() and bool(adapter.prefix_sharing)


# ------------------------------------------------------------------------ tensors
def per_token_keys(inputs: dict[str, Any]) -> list[str]:
    """Keys of ``inputs`` whose tensors hold one entry per token ([B, T])."""
    shape = inputs["input_ids"].shape
    return [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.ndim == 2 and v.shape == shape]


def image_token_ids(adapter: ModelAdapter) -> list[int]:
    ids = []
    for config in (adapter.model.config, adapter.text_config):
        for attribute in _IMAGE_TOKEN_ATTRIBUTES:
            value = getattr(config, attribute, None)
            if isinstance(value, int):
                ids.append(value)
    return sorted(set(ids))


def _pad_value(key: str, adapter: ModelAdapter) -> int:
    if key == "input_ids":
        return int(adapter.tokenizer.pad_token_id or 0)
    return 0


def realign(inputs: dict[str, Any], keys: list[str], lengths: torch.Tensor, starts: torch.Tensor,
            width: int, adapter: ModelAdapter, right: bool = False) -> dict[str, Any]:
    """Per-token tensors cut to ``[starts[b], starts[b] + lengths[b])`` of row b, re-padded
    to ``width`` on the left (or the right); other entries are returned unchanged."""
    out = dict(inputs)
    rows = len(lengths)
    for key in keys:
        old = inputs[key]
        new = torch.full((rows, width), _pad_value(key, adapter), dtype=old.dtype, device=old.device)
        for b in range(rows):
            n, s = int(lengths[b]), int(starts[b])
            piece = old[b, s : s + n]
            if right:
                new[b, :n] = piece
            else:
                new[b, width - n :] = piece
        out[key] = new
    return out


def fork_cache(cache: Any, index: torch.Tensor) -> Any:
    """A cache whose row r is row ``index[r]`` of ``cache``; ``cache`` itself is left as is
    (later updates of the fork concatenate onto copies, never into the original)."""
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        if type(layer).__name__ not in ("DynamicLayer", "DynamicSlidingWindowLayer"):
            raise TypeError(f"cannot fork a {type(layer).__name__} cache layer")
        fork = copy.copy(layer)
        if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.numel():
            where = index.to(layer.keys.device)
            fork.keys = layer.keys.index_select(0, where)
            fork.values = layer.values.index_select(0, where)
        new.layers.append(fork)
    return new


def truncate_cache(cache: Any, length: int) -> Any:
    """A copy of ``cache`` holding its first ``length`` columns (``cache`` is left as is);
    None where a layer cannot be cut: a sliding-window layer that already dropped
    columns, or any layer other than the dynamic ones."""
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        kind = type(layer).__name__
        if kind not in ("DynamicLayer", "DynamicSlidingWindowLayer") or not getattr(layer, "is_initialized", False):
            return None
        if layer.keys is None or layer.keys.shape[-2] < length:
            return None
        cut = copy.copy(layer)
        if kind == "DynamicSlidingWindowLayer":
            # only while it still holds every column it saw (the prompt is shorter than the window)
            seen = getattr(layer, "cumulative_length", None)
            if not isinstance(seen, int) or seen != layer.keys.shape[-2] or getattr(layer, "record_past", False):
                return None
            cut.cumulative_length = length
        cut.keys = layer.keys[..., :length, :].clone()
        cut.values = layer.values[..., :length, :].clone()
        new.layers.append(cut)
    return new


def explicit_positions(adapter: ModelAdapter, inputs: dict[str, Any]) -> torch.Tensor | None:
    """Position ids the full forward of ``inputs`` would use, where the model derives them
    from the whole sequence (Qwen2-VL's 3-D M-RoPE): [3, B, T]; None for 1-D positions
    (the column index, which a cached step continues by itself)."""
    inner = getattr(adapter.model, "model", None)
    if inner is None or not hasattr(inner, "get_rope_index"):
        return None
    ids = inputs["input_ids"]
    if inputs.get("image_grid_thw") is None and inputs.get("video_grid_thw") is None:
        columns = torch.arange(ids.shape[1], device=ids.device)
        return columns.view(1, 1, -1).expand(3, ids.shape[0], -1).clone()
    positions, _ = inner.get_rope_index(
        ids,
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs.get("image_grid_thw"),
        video_grid_thw=inputs.get("video_grid_thw"),
        attention_mask=inputs.get("attention_mask"),
    )
    return positions


def _take_positions(positions: torch.Tensor | None, rows: torch.Tensor, columns: slice) -> dict[str, Any]:
    if positions is None:
        return {}
    return {"position_ids": positions[:, rows.to(positions.device), columns]}


# ------------------------------------------------------------------------ search
@dataclass
class PrefixState:
    """A batch of prompts run up to their last ``n`` columns (left padded, [Q, T])."""

    cache: Any
    attention_mask: torch.Tensor  # [Q, T]
    suffix: dict[str, torch.Tensor]  # per-token tensors of the last n columns, [Q, n]
    positions: torch.Tensor | None  # explicit full positions [3, Q, T] or None
    n: int


def run_prefix(adapter: ModelAdapter, inputs: dict[str, Any], n: int) -> PrefixState | None:
    """Run every column of ``inputs`` but the last ``n`` (with the images) once, caching.

    None when the split is impossible (no prefix left, or image tokens in the last n
    columns); callers then run the full forward.
    """
    ids = inputs["input_ids"]
    if ids.shape[1] - n < 1:
        return None
    image_ids = image_token_ids(adapter)
    tail = ids[:, -n:]
    if image_ids and bool(torch.isin(tail, torch.tensor(image_ids, device=tail.device)).any()):
        return None
    keys = per_token_keys(inputs)
    prefix = {k: (v[:, :-n] if k in keys else v) for k, v in inputs.items()}
    positions = explicit_positions(adapter, inputs)
    if positions is not None:
        prefix["position_ids"] = positions[..., :-n]
    with torch.inference_mode():
        output = adapter.model(**prefix, **model_kwargs(adapter.model, keep=1, use_cache=True))
    suffix = {k: inputs[k][:, -n:] for k in keys if k != "attention_mask"}
    return PrefixState(output_cache(output), inputs["attention_mask"], suffix, positions, n)


def step(adapter: ModelAdapter, state: PrefixState, rows: torch.Tensor, keep: int) -> torch.Tensor:
    """The last ``n`` columns of prompt ``rows[r]`` for every step row r, over a copy of its
    cached prefix: logits of the last ``keep`` positions, [R, keep, V] float32.

    Hooks registered around the call (insertion, capture) see a pass of seq = n whose
    last positions are the rows' last prompt token (and answer tokens)."""
    device = state.attention_mask.device
    rows = rows.to(device)
    inputs = {k: v.index_select(0, rows) for k, v in state.suffix.items()}
    inputs["attention_mask"] = state.attention_mask.index_select(0, rows)
    inputs.update(_take_positions(state.positions, rows, slice(-state.n, None)))
    cache = fork_cache(state.cache, rows)
    with torch.inference_mode():
        output = adapter.model(**inputs, **model_kwargs(adapter.model, keep=keep, cache=cache, use_cache=True))
    return output.logits[:, -keep:].float()


# ------------------------------------------------------------------------ scan
def _render_split(adapter: ModelAdapter, prefix_text: str, rest: str, n_images: int) -> tuple[str, str] | None:
    """The rendered (chat template, image markup) prompt cut where ``rest`` begins."""
    marked = adapter.render_text(prefix_text + _SENTINEL + rest, n_images)
    if marked.count(_SENTINEL) != 1:
        return None
    head, tail = marked.split(_SENTINEL)
    if head + tail != adapter.render_text(prefix_text + rest, n_images):
        return None
    return head, tail


def shared_text_prefix(prompts: Sequence[Prompt], separator: str = "\n") -> Prompt | None:
    """The longest common text prefix of ``prompts`` that ends with ``separator``, with the
    images it holds (the demonstration blocks shared by a group); None when there is none."""
    first = prompts[0].text
    end = len(first)
    for prompt in prompts[1:]:
        end = min(end, len(prompt.text))
        for i in range(end):
            if prompt.text[i] != first[i]:
                end = i
                break
    cut = first.rfind(separator, 0, end)
    if cut < 0:
        return None
    text = first[: cut + len(separator)]
    n_images = text.count(IMAGE_PLACEHOLDER)
    images = prompts[0].images[:n_images]
    if any(p.images[:n_images] != images for p in prompts[1:]):
        return None
    return Prompt(text, images)


def capture_shared(
    adapter: ModelAdapter,
    prompts: Sequence[Prompt],
    prefix: Prompt,
    locations: torch.Tensor | None = None,
    timer: Callable[[int], AbstractContextManager[Any]] | None = None,
) -> torch.Tensor | None:
    """Last-token head activations of ``prompts`` that all start with ``prefix`` (text and
    images): the prefix runs once, each prompt's rest runs over a copy of its cache, all
    rows in one step. [G, L, H, D] float32 (or [G, K, D] at ``locations``), or None when
    the prompts cannot share the prefix exactly (tokenization across the boundary
    differs, the family is not supported, ...): callers then run the full forwards.
    """
    from stvcli.engine import capturing

    if not can_share_prefix(adapter) or not prompts:
        return None
    n_prefix_images = len(prefix.images)
    rendered, rests = [], []
    for prompt in prompts:
        if not prompt.text.startswith(prefix.text):
            return None
        split = _render_split(adapter, prefix.text, prompt.text[len(prefix.text) :], len(prompt.images))
        if split is None or (rendered and split[0] != rendered[0][0]):
            return None
        rendered.append(split)
        rests.append(Prompt(prompt.text[len(prefix.text) :], prompt.images[n_prefix_images:]))
    head = rendered[0][0]
    # The prompt's tokens must be the prefix's tokens then the rest's (less the BOS the
    # tokenizer puts at the start of any text): checked on the rendered text, where image
    # markup is special tokens that the processor's expansion keeps at the same places.
    tokenize = adapter.tokenizer
    head_ids = tokenize(head)["input_ids"]
    extras = []
    for _, tail in rendered:
        tail_ids = tokenize(tail)["input_ids"]
        full_ids = tokenize(head + tail)["input_ids"]
        extra = len(head_ids) + len(tail_ids) - len(full_ids)
        if extra < 0 or full_ids != head_ids + tail_ids[extra:] or len(tail_ids) <= extra:
            return None
        extras.append(extra)
    prefix_inputs = adapter._encode_rendered([head], [prefix])
    rest_inputs = adapter._encode_rendered([t for _, t in rendered], rests)
    p = int(prefix_inputs["input_ids"].shape[1])
    if int(prefix_inputs["attention_mask"].sum()) != p:
        return None
    width = rest_inputs["input_ids"].shape[1]
    real = rest_inputs["attention_mask"].sum(1).cpu()
    lengths_t = real - torch.tensor(extras)
    starts = width - real + torch.tensor(extras)
    n = int(lengths_t.max())
    keys = per_token_keys(rest_inputs)
    step_inputs = realign(rest_inputs, keys, lengths_t, starts, n, adapter, right=True)
    mask = step_inputs["attention_mask"]
    prefix_run = dict(prefix_inputs)
    prefix_positions = explicit_positions(adapter, prefix_inputs)
    if prefix_positions is not None:  # M-RoPE: the rest continues after the prefix's last position
        prefix_run["position_ids"] = prefix_positions
        step_inputs["position_ids"] = explicit_positions(adapter, step_inputs) + prefix_positions.max() + 1
    step_inputs["attention_mask"] = torch.cat([mask.new_ones(len(prompts), p), mask], dim=1)
    timer = timer or (lambda rows: nullcontext())
    with torch.inference_mode():
        with timer(0):
            output = adapter.model(**prefix_run, **model_kwargs(adapter.model, keep=1, use_cache=True))
        cache = fork_cache(output_cache(output), torch.zeros(len(prompts), dtype=torch.long))
        last = (lengths_t - 1).to(mask.device)
        with timer(len(prompts)), capturing(adapter, locations, positions=last) as capture:
            adapter.model(**step_inputs, **model_kwargs(adapter.model, keep=1, cache=cache, use_cache=True))
    return capture.result()
