"""Per-head activation capture and insertion (the heart of stv).

A head's activation is its slice of the INPUT of the decoder layer's attention output
projection: ``[batch, seq, n_heads * head_dim]`` viewed as ``[batch, seq, n_heads,
head_dim]``. Both operations work through forward pre-hooks on those projections, so
the model's own modules run unchanged.

Positions: prompts are left padded, so the last prompt token of every row is position
-1 of a prefill pass. Insertion writes that position (or the last ``trailing[b]``
positions when answer tokens follow the prompt) and the single position of every
decode step (seq = 1); with ``write_at="prompt"`` only the last prompt token (the
first column of the tail, in the first forward inside the block). Because attention
is causal, nothing before the last prompt token depends on the inserted vectors: a
prefix can be computed once (KV cache) and shared by many candidates, which is what
``stvcli.prefix`` relies on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

from stvcli.models.base import ModelAdapter

InsertMode = Literal["replace", "add"]
WriteAt = Literal["every", "prompt"]  # every: the last prompt token and every token after; prompt: that token only


def all_locations(n_layers: int, n_heads: int) -> torch.Tensor:
    """Every (layer, head) pair, layer-major: [L * H, 2] int64."""
    layers = torch.arange(n_layers).repeat_interleave(n_heads)
    heads = torch.arange(n_heads).repeat(n_layers)
    return torch.stack([layers, heads], dim=1)


def _group_by_layer(locations: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """layer -> (heads at that layer [k_l], their row indices in ``locations`` [k_l])."""
    locations = torch.as_tensor(locations, dtype=torch.long).reshape(-1, 2)
    groups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for layer in locations[:, 0].unique().tolist():
        rows = (locations[:, 0] == layer).nonzero().flatten()
        groups[int(layer)] = (locations[rows, 1], rows)
    return groups


def _check_locations(adapter: ModelAdapter, locations: torch.Tensor) -> None:
    if locations.ndim != 2 or locations.shape[1] != 2:
        raise ValueError(f"locations must be [K, 2], got {tuple(locations.shape)}")
    if locations.numel() and (
        int(locations[:, 0].max()) >= adapter.n_layers or int(locations[:, 1].max()) >= adapter.n_heads
        or int(locations.min()) < 0
    ):
        raise ValueError(
            f"locations out of range for a model with {adapter.n_layers} layers x {adapter.n_heads} heads"
        )


@dataclass
class Capture:
    """Last-token activations recorded by ``capturing``; read with ``result()``."""

    adapter: ModelAdapter
    locations: torch.Tensor | None
    _store: dict[int, torch.Tensor]
    _groups: dict[int, tuple[torch.Tensor, torch.Tensor]]

    def result(self) -> torch.Tensor:
        """[B, L, H, D] float32 when capturing all heads, else [B, K, D] in ``locations`` order."""
        if len(self._store) != len(self._groups):
            raise RuntimeError("no forward pass ran inside the capturing() block")
        if self.locations is None:  # layers may sit on different devices (device_map sharding)
            device = self._store[min(self._store)].device
            return torch.stack([self._store[layer].to(device) for layer in sorted(self._store)], dim=1)
        first = next(iter(self._store.values()))
        out = first.new_empty(first.shape[0], len(self.locations), self.adapter.head_dim)
        for layer, (_, rows) in self._groups.items():
            out[:, rows.to(out.device)] = self._store[layer].to(out.device)
        return out


@contextmanager
def capturing(
    adapter: ModelAdapter, locations: torch.Tensor | None = None, positions: torch.Tensor | None = None
) -> Iterator[Capture]:
    """Record the last-token head activations of the first forward pass inside the block.

    locations: [K, 2] (layer, head) or None for every head. positions: [B] the column
    to read in each row (default -1, the last token of a left-padded batch; right-padded
    passes such as ``stvcli.prefix.capture_shared`` give each row's last real token).
    Hooks are removed on exit, also when the block raises.
    """
    if locations is not None:
        locations = torch.as_tensor(locations, dtype=torch.long)
        _check_locations(adapter, locations)
        groups = _group_by_layer(locations)
    else:
        every = torch.arange(adapter.n_heads)
        groups = {layer: (every, every) for layer in range(adapter.n_layers)}
    capture = Capture(adapter, locations, {}, groups)
    n_heads, head_dim = adapter.n_heads, adapter.head_dim
    handles = []

    def make_hook(layer: int, heads: torch.Tensor):
        heads_on_device: dict[torch.device, torch.Tensor] = {}
        columns_on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        take_all = locations is None

        def hook(module, args):
            if layer in capture._store:
                return None
            x = args[0]
            if positions is None:
                last = x[:, -1]
            else:
                if x.device not in columns_on_device:
                    columns_on_device[x.device] = (torch.arange(x.shape[0], device=x.device), positions.to(x.device))
                rows, columns = columns_on_device[x.device]
                last = x[rows, columns]
            last = last.reshape(x.shape[0], n_heads, head_dim)
            if not take_all:
                index = heads_on_device.setdefault(x.device, heads.to(x.device))
                last = last.index_select(1, index)
            capture._store[layer] = last.detach().float().clone()
            return None

        return hook

    try:
        for layer, (heads, _) in groups.items():
            handles.append(adapter.projections[layer].register_forward_pre_hook(make_hook(layer, heads)))
        yield capture
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def inserting(
    adapter: ModelAdapter,
    locations: torch.Tensor,
    vectors: torch.Tensor,
    mode: InsertMode = "replace",
    trailing: torch.Tensor | None = None,
    row_mask: torch.Tensor | None = None,
    write_at: WriteAt = "every",
) -> Iterator[None]:
    """Write ``vectors`` into the head slices at ``locations`` for every forward inside.

    locations: [K, 2]; vectors: [K, D] (same for every row) or [B, K, D] (per row).
    mode: ``replace`` sets the slice; ``add`` adds the vector to the model's own slice.
    trailing: [B] positions to write at the end of each row in a multi-token pass
    (default 1, the last prompt token); decode steps (seq = 1) always write their token.
    row_mask: [B, K] bool; where False that row keeps its own activation at that
    location (MTV's search inserts a different head subset per row).
    write_at: ``every`` writes the whole tail and every decode step; ``prompt`` writes
    only the last prompt token: the first column of the tail, in the first forward
    inside the block (a generation's prefill, or its last-prompt-token step over a
    shared prefix); later forwards (decode steps) run unedited.
    """
    locations = torch.as_tensor(locations, dtype=torch.long)
    _check_locations(adapter, locations)
    if mode not in ("replace", "add"):
        raise ValueError(f"unknown insertion mode {mode!r}")
    if write_at not in ("every", "prompt"):
        raise ValueError(f"unknown write position {write_at!r}")
    if vectors.shape[-2:] != (len(locations), adapter.head_dim) or vectors.ndim not in (2, 3):
        raise ValueError(
            f"vectors must be [K, D] or [B, K, D] with K={len(locations)}, D={adapter.head_dim}; "
            f"got {tuple(vectors.shape)}"
        )
    n_heads, head_dim = adapter.n_heads, adapter.head_dim
    # decided once here, not per hook call (that would be a device sync in every layer)
    tail_is_one = trailing is None or bool((torch.as_tensor(trailing) == 1).all())
    handles = []

    def make_hook(layer: int, heads: torch.Tensor, rows: torch.Tensor):
        # Moved to the device and dtype of the projection's input on first use: under
        # device_map sharding each layer has its own device (and with CPU/disk offload
        # the weight sits on "meta" until accelerate loads it, so the input is the truth).
        selected = vectors.index_select(-2, rows.to(vectors.device))
        selected_keep = None if row_mask is None else row_mask.index_select(1, rows.to(row_mask.device))
        placed: dict[tuple[torch.device, torch.dtype], tuple] = {}
        calls = [0]

        def place(device: torch.device, dtype: torch.dtype):
            if (device, dtype) not in placed:
                keep = None if selected_keep is None else selected_keep.to(device)[:, :, None]  # [B, k, 1]
                placed[(device, dtype)] = (
                    heads.to(device),
                    selected.to(device=device, dtype=dtype),
                    None if trailing is None else torch.as_tensor(trailing, device=device).long(),
                    keep,
                )
            return placed[(device, dtype)]

        def hook(module, args):
            calls[0] += 1
            if write_at == "prompt" and calls[0] > 1:
                return None
            x = args[0]
            device = x.device
            heads, values, tail, keep = place(device, x.dtype)
            batch, seq = x.shape[0], x.shape[1]
            if values.ndim == 3 and values.shape[0] != batch:
                raise ValueError(f"per-row vectors for {values.shape[0]} rows, but the batch has {batch}")
            if torch.is_grad_enabled() or not x.is_contiguous():
                x = x.contiguous().clone()
            view = x.view(batch, seq, n_heads, head_dim)
            if seq == 1 or tail_is_one:
                slot = view[:, -1]  # [B, H, D], a view into x
                if keep is None and mode == "replace":
                    slot[:, heads] = values
                elif keep is None:
                    slot[:, heads] += values
                else:
                    current = slot[:, heads]  # [B, k, D] copy
                    new = values if mode == "replace" else current + values
                    slot[:, heads] = torch.where(keep, new, current)
            else:
                positions = torch.arange(seq, device=device)
                start = seq - tail[:, None]  # [B, 1] each row's last prompt token
                written = positions[None, :] == start if write_at == "prompt" else positions[None, :] >= start
                mask = written[:, :, None, None]  # [B, T, 1, 1]
                current = view[:, :, heads]  # [B, T, k, D] copy
                new = values.unsqueeze(-3)  # [(B,) 1, k, D]
                if mode == "add":
                    new = current + new
                if keep is not None:
                    mask = mask & keep[:, None]  # [B, T, k, 1]
                view[:, :, heads] = torch.where(mask, new, current)
            return (x, *args[1:])

        return hook

    try:
        for layer, (heads, rows) in _group_by_layer(locations).items():
            handles.append(adapter.projections[layer].register_forward_pre_hook(make_hook(layer, heads, rows)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class Intervention:
    """Vectors to insert: locations [K, 2], vectors [K, D] or [B, K, D], and the mode."""

    locations: torch.Tensor
    vectors: torch.Tensor
    mode: InsertMode = "replace"
    row_mask: torch.Tensor | None = None  # [B, K] bool
    write_at: WriteAt = "every"

    def rows(self, index: slice | torch.Tensor) -> "Intervention":
        """The intervention for some rows of the batch (a slice, or a [R] index of
        candidate rows): per-row vectors and masks are taken, the rest is kept."""
        vectors = self.vectors[index] if self.vectors.ndim == 3 else self.vectors
        mask = None if self.row_mask is None else self.row_mask[index]
        return Intervention(self.locations, vectors, self.mode, mask, self.write_at)


@contextmanager
def applied(adapter: ModelAdapter, intervention: Intervention | None, trailing: torch.Tensor | None = None):
    """``inserting`` for an optional intervention (no hooks at all when None)."""
    if intervention is None:
        yield
        return
    with inserting(
        adapter, intervention.locations, intervention.vectors, intervention.mode, trailing, intervention.row_mask,
        intervention.write_at,
    ):
        yield
