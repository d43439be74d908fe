"""Build the shapes model: a LLaVA whose eyes are trained here and whose LM is pretrained.

``ensure_shapes_model(backbone)`` returns a directory that loads like any hub model:

    AutoModelForImageTextToText.from_pretrained(dir)  # LlavaForConditionalGeneration
    AutoProcessor.from_pretrained(dir)                # LlavaProcessor + CLIPImageProcessorPil

The language model is the frozen backbone (``backbones.ensure_backbone``). A tiny CLIP
vision tower (hidden 128, 2 layers, 16-pixel patches on 32x32 images: 4 patch tokens
plus CLS, CLS dropped) and LLaVA's standard projector are trained to map every image
onto the LM's input embeddings of the four words describing it (``Scene.words``),
with loss MSE / mean squared norm + (1 - cosine). Nothing is backpropagated through
the LM, so ~1,200 steps of batch 128 take a couple of minutes on a CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from stvcli.cache import cache_dir, ensure_built
from stvcli.errors import StvError
from stvcli.shapes.backbones import backbone_spec, ensure_backbone
from stvcli.shapes.variants import single_token_labels
from stvcli.shapes.world import DESCRIPTION_WORDS, IMAGE_SIZE, draw, sample_scene, split_rng

IMAGE_TOKEN = "<image>"
PATCH_SIZE = 16
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 4
BUILD_VERSION = 1  # bump when the recipe changes: cached models are rebuilt


@dataclass(frozen=True)
class TrainSettings:
    """How the vision tower and projector are trained (defaults: the measured recipe)."""

    steps: int = 1200
    batch_size: int = 128
    learning_rate: float = 2e-3
    pool_size: int = 24576  # pre-drawn training images, sampled with replacement
    seed: int = 0
    threads: int = 1  # one thread: small matmuls gain little from more, and they thrash on a busy CPU


VISION_CONFIG: dict[str, Any] = dict(
    model_type="clip_vision_model",
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE,
    projection_dim=128,
)


def shapes_model_dir(
    backbone: str = "smollm2", cache: str | Path | None = None, settings: TrainSettings | None = None
) -> Path:
    """Where the shapes model on ``backbone`` lives (whether or not it is built yet);
    non-default training settings get a directory of their own."""
    name = f"{backbone_spec(backbone).name}-v{BUILD_VERSION}"
    recipe = dataclasses.replace(settings, threads=1) if settings is not None else TrainSettings()
    if recipe != TrainSettings():
        name += "-" + hashlib.sha1(repr(recipe).encode()).hexdigest()[:8]
    return cache_dir(cache) / "shapes" / name


def ensure_shapes_model(
    backbone: str = "smollm2",
    cache: str | Path | None = None,
    *,
    settings: TrainSettings | None = None,
    quiet: bool = False,
) -> Path:
    """The shapes model's directory, building it (once, atomically) when it is missing
    or fails its checksums. Status lines go to stderr unless ``quiet``."""
    backbone_spec(backbone)  # unknown names fail before anything is built
    console = Console(stderr=True, quiet=quiet)
    return ensure_built(
        shapes_model_dir(backbone, cache, settings),
        lambda staging: build_shapes_model(backbone, staging, cache=cache, settings=settings, console=console),
        on_rebuild=lambda why: console.print(f"[yellow]stv: rebuilding the shapes model on {backbone} ({why})[/]"),
    )


def build_shapes_model(
    backbone: str,
    out: Path,
    *,
    cache: str | Path | None = None,
    settings: TrainSettings | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Build, train, check and save the shapes model into ``out``; returns build facts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings or TrainSettings()
    console = console or Console(stderr=True)
    start = time.perf_counter()
    lm_dir = ensure_backbone(backbone, cache, quiet=console.quiet)
    console.print(f"stv: building the shapes model on {backbone} once (about 2-4 minutes on a CPU)")
    with console.status(f"loading the {backbone} backbone"):
        tokenizer = AutoTokenizer.from_pretrained(lm_dir)
        lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    word_ids = single_token_ids(tokenizer, DESCRIPTION_WORDS, backbone)
    single_token_ids(tokenizer, single_token_labels(), backbone)  # the tasks' labels, checked early
    with torch.no_grad():
        targets = lm.get_input_embeddings()(torch.tensor(word_ids)).float()  # [W, hidden], scaled as the LM sees them
    model, processor = _assemble(lm, tokenizer)
    del lm
    with _threads(settings.threads):
        loss = _train(model, processor, targets, settings, console)
        accuracy = nearest_word_accuracy(model, processor, tokenizer, n_images=256, seed=settings.seed)
    console.print(f"stv: image tokens whose nearest word embedding is their target: {accuracy:.1%}")
    if accuracy < 0.9:
        raise StvError(f"the shapes model on {backbone} did not train (nearest-word accuracy {accuracy:.0%}); report this")
    with console.status(f"saving to {out}"):
        model.save_pretrained(out)
        processor.save_pretrained(out)
    with console.status("checking that it loads like a hub model"):
        _check_reload(out, model, processor)
    seconds = time.perf_counter() - start
    console.print(f"stv: shapes model on {backbone} ready in {seconds:.0f} s")
    return {
        "backbone": backbone,
        "build_version": BUILD_VERSION,
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "final_loss": round(loss, 4),
        "nearest_word_accuracy": round(accuracy, 4),
        "seconds": round(seconds, 1),
    }


# ---------------------------------------------------------------------- tokens
def single_token_ids(tokenizer: Any, words: Iterable[str], backbone: str = "") -> list[int]:
    """The one token id of every space-prefixed word; StvError naming those that split."""
    ids, split = [], []
    for word in words:
        encoded = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.append(int(encoded[0]))
        else:
            split.append(word)
    if split:
        where = f" by the {backbone} tokenizer" if backbone else ""
        raise StvError(f"label words must be one token each; split{where}: {', '.join(split)}")
    return ids


# ---------------------------------------------------------------------- assembly
def _assemble(lm: nn.Module, tokenizer: Any) -> tuple[nn.Module, Any]:
    """A LlavaForConditionalGeneration around ``lm`` (copied in) plus its processor."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.chat_template = None  # SmolLM2's template is text-only; prompts are plain text
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    old_vocab = lm.get_input_embeddings().weight.shape[0]
    lm.resize_token_embeddings(max(len(tokenizer), old_vocab), mean_resizing=False)
    with torch.no_grad():
        lm.get_input_embeddings().weight[old_vocab:] = 0.0  # tied: the LM head never predicts <image>
        if lm.get_output_embeddings() is not None:
            lm.get_output_embeddings().weight[old_vocab:] = 0.0
    config = LlavaConfig(
        text_config=lm.config.to_dict(),
        vision_config=VISION_CONFIG,
        image_token_index=image_token_id,
        image_seq_length=TOKENS_PER_IMAGE,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", True)),
    )
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    model.tie_weights()
    model.generation_config = lm.generation_config
    model.eval()

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
    )
    return model, processor


# ---------------------------------------------------------------------- training
def image_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The image tokens the LM receives: [batch, 4, hidden]."""
    out = model.model.get_image_features(
        pixel_values=pixel_values, vision_feature_layer=-1, vision_feature_select_strategy="default"
    )
    return torch.stack(list(out.pooler_output))


def _train(model: nn.Module, processor: Any, targets: torch.Tensor, settings: TrainSettings, console: Console) -> float:
    """Regress every image's 4 tokens onto its words' embeddings; returns the final loss."""
    torch.manual_seed(settings.seed)
    trainable = [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in trainable:
        parameter.requires_grad_(True)
    with console.status(f"drawing {settings.pool_size} training images"):
        pixels, words = _training_pool(processor, settings.pool_size, settings.seed)
    scale = targets.pow(2).sum(-1).mean()  # mean squared norm of a target embedding
    optimizer = torch.optim.Adam(trainable, lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / settings.steps)))
    generator = torch.Generator().manual_seed(settings.seed)
    model.model.vision_tower.train()
    model.model.multi_modal_projector.train()
    recent: list[float] = []
    columns = (TextColumn("training the vision tower"), BarColumn(), TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=console.quiet) as progress:
        task = progress.add_task("train", total=settings.steps, loss=float("nan"))
        for _ in range(settings.steps):
            batch = torch.randint(0, len(pixels), (settings.batch_size,), generator=generator)
            predicted = image_features(model, pixels[batch])
            target = targets[words[batch]]
            mse = (predicted - target).pow(2).sum(-1).mean() / scale
            cosine = nn.functional.cosine_similarity(predicted, target, dim=-1).mean()
            loss = mse + (1 - cosine)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            recent = (recent + [loss.item()])[-50:]
            progress.update(task, advance=1, loss=sum(recent) / len(recent))
    model.eval()
    for parameter in trainable:
        parameter.requires_grad_(False)
    return sum(recent) / len(recent)


def _training_pool(processor: Any, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` processed images of random scenes (empty and crowded ones included) and
    the index of each of their 4 words in DESCRIPTION_WORDS: ([N, 3, 32, 32], [N, 4])."""
    rng = split_rng(seed, "tower")
    index = {word: i for i, word in enumerate(DESCRIPTION_WORDS)}
    drawn = [sample_scene(rng, counts=(0, 1, 1, 1, 1, 2, 3)) for _ in range(size)]
    pixels = torch.cat(
        [processor.image_processor([draw(s) for s in chunk], return_tensors="pt")["pixel_values"] for chunk in _chunks(drawn, 1024)]
    )
    words = torch.tensor([[index[w] for w in s.words()] for s in drawn])
    return pixels, words


def nearest_word_accuracy(model: nn.Module, processor: Any, tokenizer: Any, n_images: int = 256, seed: int = 0) -> float:
    """Fraction of image tokens (of held-out images) whose nearest vocabulary embedding,
    by cosine, is the token of their target word."""
    rng = split_rng(seed, "tower-check")
    drawn = [sample_scene(rng, counts=(0, 1, 1, 2, 3)) for _ in range(n_images)]
    pixels = processor.image_processor([draw(s) for s in drawn], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = image_features(model, pixels.to(model.dtype)).reshape(-1, model.config.text_config.hidden_size)
        vocabulary = model.get_input_embeddings()
        table = vocabulary(torch.arange(vocabulary.weight.shape[0]))  # scaled like real inputs
        similarity = nn.functional.normalize(tokens, dim=-1) @ nn.functional.normalize(table, dim=-1).T
        nearest = similarity.argmax(-1)
    expected = torch.tensor([single_token_ids(tokenizer, s.words())[j] for s in drawn for j in range(TOKENS_PER_IMAGE)])
    return float((nearest == expected).float().mean())


def _check_reload(directory: Path, model: nn.Module, processor: Any) -> None:
    """Load ``directory`` through the Auto classes and compare its image tokens."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    loaded = AutoModelForImageTextToText.from_pretrained(directory, dtype=torch.float32).eval()
    loaded_processor = AutoProcessor.from_pretrained(directory)
    rng = split_rng(0, "reload-check")
    images = [draw(sample_scene(rng, counts=(0, 1, 2))) for _ in range(4)]
    pixels = loaded_processor(text=[IMAGE_TOKEN] * 4, images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        same = torch.allclose(image_features(loaded, pixels), image_features(model, pixels), atol=1e-5)
    if not same or loaded.config.image_token_index != model.config.image_token_index:
        raise StvError(f"the saved shapes model in {directory} does not reload identically; report this")


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)
