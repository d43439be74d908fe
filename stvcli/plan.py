"""``stv plan``: what every stage will cost, from the model's config and the data alone.

No weights load and nothing is downloaded but, for a model that is neither a short
name nor cached, its ``config.json`` when the hub can be reached. For each stage (scan,
bank, search, MTV, eval) the plan gives:

- forwards: the stages' own accounting (docs/method.md §7.4: one per sequence row;
  shared prefixes count 0, a generation counts 1), computed from the same settings
  and the same rules the stages apply (``forward_counts``); exact when the data was
  read, else exact provided the data has the assumed sizes (said per stage);
- prompt lengths in tokens, image tokens included: text measured with the model's
  tokenizer when one is on this machine, else about 4 characters per token; images at
  the model's tokens per image (``ModelGeometry``); for hub data that is not read,
  typical items of the task (``TYPICAL``), stated as assumptions;
- memory: the scan's kept activations and means, the bank, the searches' state, the
  KV cache of a batch, the weights; the artifacts' paths and sizes;
- with ``throughput`` (forwards per second, per stage if wished) the time per stage.

Warnings name what will not fit: shots past the context (e.g. Qwen-VL's 256-token
images x 64 shots), past Qwen-VL's trained ``seq_length``, too small a support pool.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stvcli.data.types import Item, Task
from stvcli.errors import ModelError, StvError
from stvcli.models.registry import ModelGeometry, known_model
from stvcli.prompt import IMAGE_PLACEHOLDER

STAGES = ("scan", "bank", "search", "mtv", "eval")
#: Text tokens per character when no tokenizer is on this machine: ~4 characters per
#: token is the usual rate of English under the BPE/SentencePiece vocabularies here.
CHARS_PER_TOKEN = 4
#: Tokens a chat template adds around one user turn, when it cannot be measured.
CHAT_TEMPLATE_TOKENS = 12
#: Qwen2-VL's image processor bounds (preprocessor_config.json of the 7B models).
QWEN2_VL_PIXELS = (56 * 56, 28 * 28 * 16384)
#: Many-shot prompts whose lengths are averaged for the typical figure (measured data).
SAMPLED_PROMPTS = 8
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: Families whose adapters wrap prompts in the chat template by default
#: (``chat_template_default``; tests/test_plan.py checks this against the adapters).
CHAT_TEMPLATE_FAMILIES = frozenset({"idefics3", "llava", "qwen2-vl", "qwen2.5-vl"})
#: Families whose adapters declare ``prefix_sharing``: their search and MTV rows are
#: one-token steps over each query's cached prompt (checked against the adapters too).
PREFIX_SHARING_FAMILIES = frozenset({"text", "idefics2", "idefics3", "llava", "qwen2-vl", "qwen2.5-vl"})


# ----------------------------------------------------------------------------- options
class PlanConfig(BaseModel):
    """What ``stv plan`` is asked. None = the stage's own default (read from the stage
    configs, so the plan's defaults are the stages')."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    model: str
    task: str = "vqa"
    data: str | None = None
    eval_limit: int | None = Field(default=None, ge=1)
    seed: int = Field(default=0, ge=0)
    shots: int | None = Field(default=None, ge=1)
    queries: int | None = None
    top_k: int | None = None
    top_frac: float | None = None
    clusters: int | None = None
    contexts: int | None = None
    iterations: int | None = None
    samples: int | None = None
    queries_per_iteration: int | None = None
    holdout: int | None = None
    select: str | None = None
    mean_choice: bool | None = None
    keep_choice: bool | None = None
    mtv_iterations: int | None = None
    methods: list[str] | None = None
    limit: int | None = Field(default=None, ge=1)
    support_items: int | None = Field(default=None, ge=1)  # assumed sizes of data that is not read
    eval_items: int | None = Field(default=None, ge=1)
    image_size: tuple[int, int] = (448, 448)  # (width, height) for dynamic-resolution families
    batch_size: int = Field(default=32, ge=1)  # rows per forward for the KV-cache figure (auto starts at 32 on GPU)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    chat_template: bool | None = None
    throughput: dict[str, float] | None = None  # forwards per second; key "*" for every stage
    workspace: Path | None = None

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", value)
            if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
                raise ValueError(f"must be a side in pixels or WIDTHxHEIGHT, e.g. 448 or 640x480, not {value!r}")
            width = int(match.group(1))
            return (width, int(match.group(2) or width))
        return value

    @field_validator("throughput", mode="before")
    @classmethod
    def _throughput(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {"*": float(value)}
        if isinstance(value, str):
            rates: dict[str, float] = {}
            for part in (p.strip() for p in value.split(",")):
                if not part:
                    continue
                stage, _, number = part.rpartition("=")
                stage = stage.strip() or "*"
                try:
                    rates[stage] = float(number)
                except ValueError:
                    raise ValueError(f"takes forwards per second, e.g. 12 or 12,scan=3,bank=3; got {value!r}") from None
            value = rates
        if isinstance(value, dict):
            unknown = set(value) - {"*", *STAGES}
            if unknown:
                raise ValueError(f"names unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
            bad = [k for k, v in value.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)]
            if bad or not value:
                raise ValueError("must be a positive number of forwards per second, e.g. 12 or 12,scan=3,bank=3")
        return value


# ----------------------------------------------------------------------------- the model
@dataclass
class ModelInfo:
    """The model as far as the plan knows it without its weights."""

    name: str
    family: str
    geometry: ModelGeometry
    source: str  # where the geometry comes from
    chat_template: bool  # whether prompts are wrapped in the chat template
    tokenizer: Any = None
    tokenizer_note: str = ""
    hub_id: str | None = None
    notes: str = ""  # where the geometry's values come from, what is estimated

    def image_cost(self, size: tuple[int, int]) -> int | None:
        """Tokens one image costs in a prompt (wrappers included); None when unknown."""
        g = self.geometry
        if g.image_grid:
            return dynamic_image_tokens(size, g.image_grid) + g.image_extra
        if g.image_tokens is None:
            return None
        return g.image_tokens + g.image_extra


def dynamic_image_tokens(size: tuple[int, int], grid: int, pixels: tuple[int, int] = QWEN2_VL_PIXELS) -> int:
    """Qwen2-VL's tokens for a w x h image: each side rounded to a multiple of ``grid``
    (patch x merge = 28), the area kept within the processor's pixel bounds (its
    ``smart_resize``), then one token per grid cell."""
    width, height = size
    h = max(grid, round(height / grid) * grid)
    w = max(grid, round(width / grid) * grid)
    low, high = pixels
    if h * w > high:
        scale = math.sqrt(height * width / high)
        h = max(grid, math.floor(height / scale / grid) * grid)
        w = max(grid, math.floor(width / scale / grid) * grid)
    elif h * w < low:
        scale = math.sqrt(low / (height * width))
        h = math.ceil(height * scale / grid) * grid
        w = math.ceil(width * scale / grid) * grid
    return (h // grid) * (w // grid)


def _offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def offline_tokenizer(location: str) -> tuple[Any, str]:
    """The tokenizer of ``location`` (a local directory or a hub id in the local cache),
    never downloaded and never running a model's own code; (None, why) when there is none."""
    try:
        import transformers
        from transformers import AutoTokenizer

        transformers.logging.set_verbosity_error()
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - anything: not cached, remote code, a broken file
        missing = "cached files" in str(error) or "local_files_only" in str(error)
        reason = "" if missing else f": {_one_line(error)[:100]}"
        return None, f"no tokenizer for {location} on this machine{reason}"
    return tokenizer, f"the tokenizer of {location}"


def _config_file(model: str) -> tuple[Path, str, str]:
    """``config.json`` of a local model directory, or of a hub id from the local cache
    (fetched, alone, only when the hub can be reached), where it was found, and where
    its tokenizer would be; a one-line error otherwise."""
    from stvcli.models.loading import _hub_reachable, resolve_source

    source = resolve_source(model)
    if source.local:
        if source.gguf_file:
            raise ModelError(f"{model}: stv plan reads a model's config.json; pass the model's directory or hub id, "
                             "not a .gguf file")
        return Path(source.location) / "config.json", source.location, source.location
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(source.location, "config.json")
    if isinstance(cached, str):
        return Path(cached), f"{source.location} (cached config.json)", source.location
    if _offline() or not _hub_reachable():
        raise ModelError(
            f"no config for model {model!r} on this machine and the hub cannot be reached (offline); pass a short "
            "name (stv models), a local model directory, or fetch its config.json on a connected machine"
        )
    try:
        path = Path(hf_hub_download(source.location, "config.json"))
        return path, f"{source.location} (config.json from the hub)", source.location
    except Exception as error:  # noqa: BLE001
        raise ModelError(f"cannot fetch the config of {model!r}: {_one_line(error)}") from error


class _Attrs:
    """A config dict read like a transformers config (attributes; nested dicts too)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        value = self.__dict__["_data"].get(name)
        return _Attrs(value) if isinstance(value, dict) else value


def _read_config(path: Path, where: str) -> Any:
    """The config as transformers reads it (defaults filled in, as the adapter sees it),
    or the raw JSON where transformers needs the model's own code (Qwen-VL)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read the config of {where}: {_one_line(error)}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path} is not a model config (a JSON object)")
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(path.parent), local_files_only=True), raw
    except Exception:  # noqa: BLE001 - remote-code configs, unknown model types: read the JSON
        return _Attrs(raw), raw


def _int(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def geometry_from_config(config: Any, raw: dict[str, Any], family: str) -> tuple[ModelGeometry, str]:
    """The geometry a config declares, read as the adapter reads it (heads from the
    config, head_dim from ``head_dim`` else width / heads, context from the decoder's
    ``max_position_embeddings`` else 2048); the parameters are estimated (Llama-style
    blocks, language decoder only). Returns (geometry, a note on the estimates)."""
    from stvcli.models.base import config_geometry

    text = config.get_text_config() if callable(getattr(config, "get_text_config", None)) else (
        getattr(config, "text_config", None) or config)
    n_heads, head_dim = config_geometry(text)
    n_layers = _int(text, "num_hidden_layers", "n_layer", "n_layers", "num_layers")
    if n_heads is None or head_dim is None or n_layers is None:
        raise ModelError("the config names no layer count, head count or head width; stv plan needs them "
                         "(the stages find them from the loaded model)")
    kv_heads = _int(text, "num_key_value_heads", "num_kv_heads", "n_head_kv") or (
        1 if getattr(text, "multi_query", False) else n_heads)
    context = int(getattr(text, "max_position_embeddings", 0) or 2048)  # as ModelAdapter.context_length
    trained = _int(text, "seq_length")
    window = _int(text, "sliding_window") if getattr(text, "use_sliding_window", True) is not False else None
    hidden = _int(text, "hidden_size", "n_embd", "d_model") or n_heads * head_dim
    inner = _int(text, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    vocab = _int(text, "vocab_size") or _int(config, "vocab_size") or 0
    tied = bool(getattr(text, "tie_word_embeddings", getattr(config, "tie_word_embeddings", False)))
    per_layer = hidden * n_heads * head_dim * 2 + hidden * kv_heads * head_dim * 2 + 3 * hidden * inner
    parameters = n_layers * per_layer + vocab * hidden * (1 if tied else 2)
    vision = any(key in raw for key in ("vision_config", "visual", "perceiver_config", "vision_tower"))
    tokens, extra, grid = None, 0, 0
    if family == "idefics2":
        tokens, extra = _int(getattr(config, "perceiver_config", None), "resampler_n_latents") or 64, 2
    elif family == "idefics3":
        vision_config = getattr(config, "vision_config", None)
        size, patch = _int(vision_config, "image_size"), _int(vision_config, "patch_size")
        scale = _int(config, "scale_factor") or 2
        tokens, extra = ((size // patch) ** 2 // scale**2 if size and patch else None), 3
    elif family == "llava":
        tokens = _int(config, "image_seq_length") or 576
    elif family in ("qwen2-vl", "qwen2.5-vl"):
        vision_config = getattr(config, "vision_config", None)
        grid = (_int(vision_config, "patch_size") or 14) * (_int(vision_config, "spatial_merge_size") or 2)
        extra = 2
    elif family == "qwen-vl":
        tokens, extra = 256, 7
    note = ("parameters estimated from the config: Llama-style blocks of the language decoder"
            + ("; the vision tower is not counted" if vision else ""))
    geometry = ModelGeometry(n_layers, n_heads, int(head_dim), kv_heads, context, parameters, image_tokens=tokens,
                             image_extra=extra, image_grid=grid,
                             trained_length=trained if trained and trained < context else None,
                             sliding_window=window if window and window < context else None, vision=vision)
    return geometry, note


def resolve_model(model: str, chat_template: bool | None = None) -> ModelInfo:
    """The geometry of ``model``: a short name's from the registry (offline), else from
    its config.json (a local directory, the local hub cache, or the hub when reachable)."""
    from stvcli.models.registry import adapter_class

    known = known_model(model)
    if known is not None and known.geometry is not None:
        default_chat = known.family in CHAT_TEMPLATE_FAMILIES  # without importing every family's model code
        tokenizer, why = offline_tokenizer(known.hub_id) if not known.trust_remote_code else (
            None, f"{known.hub_id}'s tokenizer is remote code, not run by stv plan")
        chat = _chat(default_chat, chat_template, tokenizer)
        return ModelInfo(known.name, known.family, known.geometry,
                         f"stv's registry, from the config of {known.hub_id}", chat, tokenizer, why, known.hub_id,
                         known.geometry.note)
    path, where, location = _config_file(model)
    config, raw = _read_config(path, where)
    cls = adapter_class(getattr(config, "architectures", None) or raw.get("architectures"))
    geometry, note = geometry_from_config(config, raw, cls.family)
    tokenizer, why = offline_tokenizer(location)
    chat = _chat(bool(getattr(cls, "chat_template_default", False)), chat_template, tokenizer)
    return ModelInfo(model, cls.family, geometry, f"config.json of {where}", chat, tokenizer, why, None, note)


def _chat(default: bool, requested: bool | None, tokenizer: Any) -> bool:
    """Whether prompts get the chat template: as asked, else the family's default, which
    (like ``settle_chat_template``) falls back to raw text when the model ships none."""
    wanted = default if requested is None else requested
    if wanted and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        return False
    return wanted


# ----------------------------------------------------------------------------- tokens
class TokenCounter:
    """Prompt text (with ``<image>`` placeholders) -> tokens the model sees."""

    def __init__(self, model: ModelInfo, image_size: tuple[int, int]) -> None:
        self.model = model
        self.per_image = model.image_cost(image_size)
        tokenizer = model.tokenizer
        self.placeholder = 0
        if tokenizer is not None:
            self.placeholder = len(tokenizer(IMAGE_PLACEHOLDER, add_special_tokens=False)["input_ids"])
        if tokenizer is not None:
            self.how = f"text measured with {model.tokenizer_note.removeprefix('the tokenizer of ')}'s tokenizer"
        else:
            self.how = (f"text estimated at {CHARS_PER_TOKEN} characters per token ({model.tokenizer_note})"
                        + (f", plus ~{CHAT_TEMPLATE_TOKENS} for the chat template" if model.chat_template else ""))

    def __call__(self, text: str) -> int:
        images = text.count(IMAGE_PLACEHOLDER)
        per_image = self.per_image or 0
        tokenizer = self.model.tokenizer
        if tokenizer is None:
            plain = text.replace(IMAGE_PLACEHOLDER, "")
            chat = CHAT_TEMPLATE_TOKENS if self.model.chat_template else 0
            return 1 + math.ceil(len(plain) / CHARS_PER_TOKEN) + chat + images * per_image
        if self.model.chat_template:
            rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                     add_generation_prompt=True)
            bos = getattr(tokenizer, "bos_token", None)
            ids = tokenizer(rendered, add_special_tokens=not (bos and rendered.startswith(bos)))["input_ids"]
        else:
            ids = tokenizer(text)["input_ids"]
        return len(ids) - images * self.placeholder + images * per_image


# ----------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class Typical:
    """What the plan assumes of a task's default hub data when it does not read it."""

    source: str
    support: int
    evaluation: int
    question: str | None  # a question of typical length (VQA)
    answer: str  # a typical answer, or the positive class's name (episodes)
    other: str = ""  # the negative class's name (episodes)
    note: str = ""


#: Typical items and sizes of the built-in tasks' default data (and, for the generic tasks,
#: typical items only). Sizes: the published split sizes, split as docs/data.md says; the
#: strings have the typical length of the data's questions and answers.
TYPICAL: dict[str, Typical] = {
    "vizwiz": Typical("lmms-lab/VizWiz-VQA", 2160, 2159, "What is the name of this product on the shelf?",
                      "unanswerable",
                      note="VizWiz val: 4,319 items, split in halves (the preset has no support split); questions "
                           "~45 characters, answers ~12 ('unanswerable' is the most frequent)"),
    "okvqa": Typical("lmms-lab/OK-VQA", 2523, 2523, "What sport can you use this for?", "surfing",
                     note="OK-VQA val2014: 5,046 items, split in halves; questions ~35 characters, answers ~7"),
    "flowers": Typical("dpdl-benchmark/oxford_flowers102", 510, 3074, None, "pink primrose", "globe thistle",
                       note="Flowers-102: train 1,020 / test 6,149 images; episodes use disjoint halves of the "
                            "classes, one episode per image of a positive class; class names ~13 characters"),
    "cub": Typical("bentrevett/caltech-ucsd-birds-200-2011", 2997, 2897, None, "Black footed Albatross",
                   "Laysan Albatross",
                   note="CUB-200-2011: train 5,994 / test 5,794 images; episodes use disjoint halves of the "
                        "classes, one episode per image of a positive class; class names ~20 characters"),
    "dtd": Typical("tanganke/dtd", 1880, 940, None, "honeycombed", "striped",
                   note="DTD: train 3,760 / test 1,880 images; episodes use disjoint halves of the classes, one "
                        "episode per image of a positive class; class names ~8 characters"),
    "vqa": Typical("", 0, 0, "What color is the bus?", "red", note="typical short VQA question and answer"),
    "classification": Typical("", 0, 0, None, "golden retriever", note="typical class name"),
    "episode": Typical("", 0, 0, None, "golden retriever", "tabby cat", note="typical class names"),
    "text": Typical("", 0, 0, "hot", "cold", note="typical word pair"),
}


def _stub_image() -> Any:
    from PIL import Image

    return Image.new("RGB", (1, 1))


def typical_item(task: Task, typical: Typical, uid: str = "typical") -> Item:
    """An item of typical length for ``task`` (images are 1-pixel stubs: only their count matters)."""
    if task.kind == "episode":
        from stvcli.data.episodes import make_episode

        ways = getattr(task, "ways", 2)
        per_class = getattr(task, "support_per_class", 1)
        names = [typical.answer, typical.other or typical.answer] + [typical.other or typical.answer] * (ways - 2)
        classes = [(name, [_stub_image] * per_class) for name in names[:ways]]
        return make_episode(uid, _stub_image, None, typical.answer, classes, 0)
    images = () if task.kind == "text" else (_stub_image,)
    return Item(uid=uid, question=typical.question, answers=(typical.answer,), images=images)


def prompt_text(task: Task, query: Item, demonstrations: Sequence[Item] = ()) -> str:
    """The text of ``task.build_prompt(query, demonstrations)`` without loading any image."""
    from stvcli.data.tasks import SEPARATOR, EpisodeTask, TemplateTask

    if isinstance(task, TemplateTask):
        blocks = [task.instruction] if task.instruction else []
        blocks += [task.demonstration_text(item) for item in demonstrations]
        blocks.append(task.query_text(query))
        return SEPARATOR.join(blocks)
    if isinstance(task, EpisodeTask):
        lines: list[str] = []
        for episode, answered in [*((d, True) for d in demonstrations), (query, False)]:
            lines += task._blocks(episode, answered)[0]  # the task's own lines; their images are not loaded
        return SEPARATOR.join(lines)
    return task.build_prompt(query, demonstrations).text


@dataclass
class DataInfo:
    source: str
    read: bool  # items read from local data (sizes and lengths measured)
    support: list[Item]
    evaluation: list[Item]
    n_support: int
    n_evaluation: int
    assumptions: list[str] = field(default_factory=list)


def resolve_data(config: PlanConfig, task: Task) -> DataInfo:
    """The data: read when it is local (a file, folder or registered in-memory source),
    else typical items and the sizes of the task's default data (or given sizes)."""
    from stvcli.data.options import DataOptions, parse_spec
    from stvcli.data.sources import source_prefixes

    spec_text = config.data or getattr(task, "default_data", None)
    spec = parse_spec(spec_text, source_prefixes()) if spec_text else None
    if spec is not None and spec.kind != "hub":
        if config.support_items or config.eval_items:
            raise StvError("--support-items/--eval-items are for data that is not read (hub data); "
                           f"{spec.raw} is read and counted")
        from stvcli.data.loading import load_task_data

        data = load_task_data(DataOptions(task=task.name, data=config.data, seed=config.seed,
                                          eval_limit=config.eval_limit))
        return DataInfo(spec.raw, True, data.support, data.evaluation, len(data.support), len(data.evaluation))
    typical = TYPICAL.get(task.name)
    default = getattr(task, "default_data", None)
    if typical is None:  # e.g. a plugin's task on hub data
        raise StvError(f"stv plan has no typical items for task {task.name}; pass --data with a local file")
    is_default = spec is not None and typical is not None and spec.location == default == typical.source
    n_support = config.support_items or (typical.support if is_default else None)
    n_eval = config.eval_items or (typical.evaluation if is_default else None)
    if n_support is None or n_eval is None:
        where = f"{spec.raw} is hub data, not read by stv plan" if spec else f"task {task.name} has no default data"
        raise StvError(f"{where}; pass --data with a local file, or the sizes to assume: --support-items N "
                       "--eval-items N")
    if is_default and config.eval_limit and not config.eval_items:
        n_eval = min(config.eval_limit, n_eval)
        if task.kind != "episode":  # the presets split one split: the support pool gets the rest
            n_support = typical.support + typical.evaluation - n_eval
    item = typical_item(task, typical)
    assumptions = [
        f"data {spec.raw if spec else '(none)'} is not read (no download): "
        f"{n_support:,} support and {n_eval:,} evaluation items assumed"
        + (" (given)" if config.support_items or config.eval_items else f" ({typical.note})" if is_default else ""),
        "items of typical length: " + (f"question {typical.question!r}, " if typical.question else "")
        + (f"classes {typical.answer!r} / {typical.other!r}" if task.kind == "episode"
           else f"answer {typical.answer!r}")
        + (f" ({typical.note})" if not is_default else ""),
    ]
    return DataInfo(spec.raw if spec else "no data (sizes given)", False, [item], [item], n_support, n_eval,
                    assumptions)


# ----------------------------------------------------------------------------- forwards
@dataclass(frozen=True)
class StageSettings:
    """The settings the forwards depend on, resolved as the stages resolve them."""

    shots: int
    queries: int
    keep_contexts: int
    top_k: int
    clusters: int
    contexts: int
    iterations: int
    samples: int
    queries_per_iteration: int
    holdout: int
    select: str
    best_of: int
    mean_choice: bool
    keep_choice: bool
    mtv_iterations: int
    mtv_samples: int
    mtv_queries_per_iteration: int
    mtv_holdout: int
    mtv_best_of: int
    methods: tuple[str, ...]
    limit: int | None


def forward_counts(s: StageSettings, n_support: int, n_evaluation: int) -> dict[str, Any]:
    """Forwards per stage as the stages count them (docs/method.md §7.4), for a support
    pool of ``n_support`` items and ``n_evaluation`` evaluation items.

    - scan (stages/scan.py): Nq = min(--queries, pool) queries, one zero-shot and one
      many-shot forward each (a shared group prefix counts 0, each query's row 1).
    - bank (stages/bank.py): the scan keeps T0 = min(Nq, keep_contexts) contexts; the
      bank runs the T - T0 it lacks (T = --contexts, default 8 x --clusters).
    - search (stages/search.py, reinforce.py): the support pool less the scan's queries
      (which are also the bank's context queries); a hold-out of --holdout items only
      when something is selected or checked on it (best-of, the mean choice); then
      iterations x samples x queries per iteration; the final pick (1 + best_of - 1 draws
      with best-of, + the mean start) scored on the hold-out when there is more than
      one; the diagnostics: final + 8 random draws (+ the mean) + the bare model on the
      hold-out, else on the first --holdout training items.
    - mtv (stages/mtv.py): per MTV method (mtv, mtv-add: each its own search), the pool
      less the scan's queries, a hold-out of 50, iterations x samples x 1 query, then
      best_of draws on the hold-out (or one training item).
    - eval (stages/evaluate.py): every method generates once per item (1 forward each,
      whatever the length of the generation).
    """
    nq = min(s.queries, n_support)
    scan = 2 * nq
    kept = min(nq, s.keep_contexts)
    bank = max(0, s.contexts - kept)
    pool = n_support - nq  # the scan's queries built the contexts: the searches never train on them
    checked = s.select == "best-of" or s.mean_choice
    holdout = min(s.holdout if checked else 0, pool)
    train = pool - holdout
    loop = s.iterations * s.samples * s.queries_per_iteration
    finalists = 1 + (s.best_of - 1 if s.select == "best-of" else 0) + int(s.mean_choice)
    final = finalists * holdout if finalists > 1 and holdout else 0
    diagnosed = holdout or min(s.holdout, train)
    diagnostics = (1 + 8 + int(s.mean_choice) + 1) * diagnosed
    search = {"forwards": loop + final + diagnostics, "loop": loop, "final": final, "diagnostics": diagnostics,
              "pool": pool, "holdout": holdout, "train": train, "finalists": finalists, "diagnosed": diagnosed,
              "fails": train < s.queries_per_iteration}
    bases = [m.partition("+")[0] for m in s.methods]
    mtv_kinds = [m for m in ("mtv", "mtv-add") if m in bases]
    mtv_holdout = min(s.mtv_holdout, pool)
    mtv_train = pool - mtv_holdout
    mtv_loop = s.mtv_iterations * s.mtv_samples * s.mtv_queries_per_iteration
    mtv_final = s.mtv_best_of * (mtv_holdout or min(1, mtv_train))
    one_mtv = mtv_loop + mtv_final
    mtv = {"forwards": one_mtv * len(mtv_kinds), "per_method": one_mtv, "kinds": mtv_kinds, "loop": mtv_loop,
           "final": mtv_final, "holdout": mtv_holdout, "train": mtv_train,
           "fails": bool(mtv_kinds) and mtv_train < s.mtv_queries_per_iteration}
    items = min(s.limit, n_evaluation) if s.limit else n_evaluation
    build = {"scan": scan, "bank": bank, "search": search["forwards"]}
    methods = {}
    for name, base in zip(s.methods, bases):
        if base.startswith("icl:"):
            base = "zero-shot"
        built = {"stv": scan + bank + build["search"], "mean-at-stv": scan + bank, "random-locations": scan,
                 "mean-all-heads": scan, "mtv": one_mtv + nq, "mtv-add": one_mtv + nq}.get(base, 0)
        methods[name] = {"build_forwards": built, "eval_forwards": items}
    return {
        "scan": {"forwards": scan, "queries": nq, "kept": kept, "fails": n_support < s.shots + 1},
        "bank": {"forwards": bank, "contexts": s.contexts, "reused": min(kept, s.contexts)},
        "search": search,
        "mtv": mtv,
        "eval": {"forwards": items * len(s.methods), "items": items, "methods": methods},
    }


def stage_settings(config: PlanConfig, task: Task, n_layers: int, n_heads: int) -> StageSettings:
    """The stages' own configs built from the plan's options (their validation and
    defaults apply), resolved as the stages resolve them."""
    from stvcli.config import ModelOptions
    from stvcli.data.options import DataOptions
    from stvcli.stages.config import CONTEXTS_PER_CLUSTER, BankConfig, EvalConfig, ScanConfig, SearchConfig
    from stvcli.stages.scan import resolve_top_k

    given = config.model_dump(exclude_none=True)

    def pick(*names: str) -> dict[str, Any]:
        return {name: given[name] for name in names if name in given}

    workspace = config.workspace or Path("W")
    scan = ScanConfig(model=ModelOptions(model=config.model), data=DataOptions(task=task.name, seed=config.seed),
                      workspace=workspace, **pick("shots", "queries", "top_k", "top_frac"))
    bank = BankConfig(workspace=workspace, **pick("clusters", "contexts"))
    search = SearchConfig(workspace=workspace, **pick("iterations", "samples", "queries_per_iteration", "holdout",
                                                      "select", "mean_choice", "keep_choice"))
    mtv = {"iterations": config.mtv_iterations} if config.mtv_iterations is not None else {}
    evaluation = EvalConfig(workspace=workspace, mtv=mtv, **pick("methods", "limit"))
    return StageSettings(
        shots=scan.shots or task.default_shots, queries=scan.queries, keep_contexts=scan.keep_contexts,
        top_k=resolve_top_k(scan, n_layers, n_heads), clusters=bank.clusters,
        contexts=bank.contexts or CONTEXTS_PER_CLUSTER * bank.clusters, iterations=search.iterations,
        samples=search.samples, queries_per_iteration=search.queries_per_iteration, holdout=search.holdout,
        select=search.select, best_of=search.best_of, mean_choice=search.mean_choice,
        keep_choice=search.keep_choice, mtv_iterations=evaluation.mtv.iterations, mtv_samples=evaluation.mtv.samples,
        mtv_queries_per_iteration=evaluation.mtv.queries_per_iteration, mtv_holdout=evaluation.mtv.holdout,
        mtv_best_of=evaluation.mtv.best_of, methods=tuple(evaluation.methods), limit=evaluation.limit,
    )


# ----------------------------------------------------------------------------- prompt lengths
@dataclass
class Lengths:
    """Token counts of one kind of prompt: typical (mean) and longest (worst case)."""

    mean: int
    longest: int

    def as_dict(self) -> dict[str, int]:
        return {"mean": self.mean, "longest": self.longest}


def _pick(items: list[Item], n: int, rng: random.Random) -> list[Item]:
    return rng.sample(items, n) if n < len(items) else list(items)


def prompt_lengths(task: Task, data: DataInfo, count: TokenCounter, shots_list: Sequence[int], seed: int = 0,
                   answers: bool = False) -> dict[int, Lengths]:
    """Tokens of prompts with each number of shots in ``shots_list`` (0 = zero-shot):
    the mean over queries (read data: every support and evaluation item for zero-shot,
    ``SAMPLED_PROMPTS`` seeded draws with shots) and the longest (zero-shot: the
    longest item; with shots: the longest query with the pool's ``shots`` longest
    demonstrations, the bound the stages check). With ``answers``, the target too."""
    out: dict[int, Lengths] = {}
    pool = data.support
    queries = [*data.support, *data.evaluation] if data.read else data.support[:1]
    rng = random.Random(f"plan:{seed}")

    def tokens(query: Item, demonstrations: Sequence[Item] = ()) -> int:
        text = prompt_text(task, query, demonstrations)
        return count(text + task.target(query) if answers else text)

    zero = [tokens(q) for q in queries]
    longest_query = queries[max(range(len(zero)), key=zero.__getitem__)]
    sizes: dict[str, int] = {}  # each pool item's cost as a demonstration (measured once)
    for shots in sorted(set(shots_list)):
        if shots == 0:
            out[0] = Lengths(round(sum(zero) / len(zero)), max(zero))
            continue
        if not data.read:
            demo = pool[0]
            n = tokens(queries[0], [demo] * shots)
            out[shots] = Lengths(n, n)
            continue
        k = min(shots, len(pool) - 1)
        sampled = []
        for query in _pick(queries, SAMPLED_PROMPTS, rng):
            others = [item for item in pool if item.uid != query.uid]
            sampled.append(tokens(query, rng.sample(others, min(k, len(others)))))
        if not sizes:
            sizes = {item.uid: count(prompt_text(task, item) + task.target(item)) for item in pool}
        ranked = sorted((item for item in pool if item.uid != longest_query.uid), key=lambda i: -sizes[i.uid])
        out[shots] = Lengths(round(sum(sampled) / len(sampled)), max(max(sampled), tokens(longest_query, ranked[:k])))
    return out


def shots_that_fit(zero: int, many: int, shots: int, budget: int) -> int:
    """The most shots whose prompt fits ``budget`` tokens, at the measured cost per shot."""
    per_shot = (many - zero) / shots if shots else 0
    if per_shot <= 0:
        return shots
    return max(0, math.floor((budget - zero) / per_shot))


# ----------------------------------------------------------------------------- memory
def human_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n)} B"


def human_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:,.2f}{unit}"
    return str(int(n))


def human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------- the plan
def make_plan(config: PlanConfig) -> dict[str, Any]:
    """The plan (a JSON-ready dict; ``render_plan`` prints it)."""
    from stvcli.data.tasks import get_task

    task = get_task(config.task)
    model = resolve_model(config.model, config.chat_template)
    g = model.geometry
    if not g.vision and task.kind != "text":
        raise StvError(f"{config.model} is a text-only model but task {task.name} has images; pick a vision model "
                       "(stv models) or a text task")
    s = stage_settings(config, task, g.n_layers, g.n_heads)
    data = resolve_data(config, task)
    counts = forward_counts(s, data.n_support, data.n_evaluation)
    count = TokenCounter(model, config.image_size)
    warnings: list[str] = []
    assumptions = list(data.assumptions)
    if g.vision and task.kind != "text":
        if count.per_image is None:
            warnings.append(f"{model.family}: tokens per image unknown; prompt lengths count the text only")
        elif g.image_grid:
            w, h = config.image_size
            assumptions.append(f"images of {w}x{h} pixels: {count.per_image - g.image_extra} tokens each + "
                               f"{g.image_extra} around them ({model.family} sizes images dynamically; "
                               "--image-size changes this)")

    # ---- prompt lengths
    method_shots = {m: _method_shots(m) for m in s.methods}
    lengths = prompt_lengths(task, data, count, [0, s.shots, *method_shots.values()], config.seed)
    with_answer = prompt_lengths(task, data, count, [0], config.seed, answers=True)[0]
    zero, many = lengths[0], lengths[s.shots]
    reserve = task.max_new_tokens
    context = g.context_length
    trained = g.trained_length

    def check(stage: str, what: str, need: Lengths, shots: int, budget: int, fix: str) -> None:
        worst = need.longest
        if worst <= budget:
            return
        fit = shots_that_fit(lengths[0].mean, need.mean, shots, budget) if shots else 0
        typical = "typical" if need.mean > budget else "longest"
        size = need.mean if need.mean > budget else worst
        advice = (f"at most {fit} shots fit ({fix.format(n=fit)})" if shots and fit >= 1
                  else "not even one demonstration fits" if shots else "shorten the items")
        warnings.append(f"{stage}: {what} need ~{size:,} tokens ({typical}) but {model.name} takes {budget:,}"
                        f"{' with ' + str(reserve) + ' generated' if budget != context else ''}; {advice}")

    check("scan", f"{s.shots}-shot prompts", many, s.shots, context, "--shots {n}")
    check("search", "zero-shot prompts with their answers", with_answer, 0, context, "")
    for method, shots in method_shots.items():
        check("eval", f"{method} prompts", lengths[shots], shots, context - reserve, "icl:{n}")
    longest_any = max(many.longest, *(lengths[n].longest + reserve for n in method_shots.values()))
    if trained and longest_any > trained:
        within = shots_that_fit(zero.mean, many.mean, s.shots, trained)
        warnings.append(
            f"{model.name}: prompts up to ~{longest_any:,} tokens are past its trained seq_length {trained:,} (dynamic "
            f"NTK and logn attention beyond it; quality unmeasured; about {within} shot(s) stay within it); padded "
            "batches past it are refused: run those stages with --batch-size 1")
    window = g.sliding_window
    if window and longest_any > window:
        warnings.append(
            f"{model.name}: prompts up to ~{longest_any:,} tokens are longer than its sliding attention window of "
            f"{window:,}: those layers attend to the last {window:,} tokens only, so the first demonstrations reach "
            "the last token only through the stack of layers")
    if counts["scan"]["fails"]:
        warnings.append(f"scan: the support pool has {data.n_support} items; --shots {s.shots} needs at least "
                        f"{s.shots + 1}")
    if counts["search"]["fails"]:
        warnings.append(f"search: only {counts['search']['train']} support items remain for the search after "
                        f"the scan's {counts['scan']['queries']} queries and a hold-out of "
                        f"{counts['search']['holdout']}; it needs {s.queries_per_iteration}: scan fewer --queries, "
                        "lower --holdout or give more support data")
    if counts["mtv"]["fails"]:
        warnings.append(f"mtv: no support items remain for MTV's training after the scan's "
                        f"{counts['scan']['queries']} queries and its hold-out of {counts['mtv']['holdout']}; "
                        "scan fewer --queries or give more support data")

    # ---- what each figure rests on
    def basis(stage: str) -> str:
        if data.read:
            return "exact"
        if stage == "eval":
            return f"exact for the assumed {data.n_evaluation:,} evaluation items"
        need = {"scan": s.queries, "bank": s.queries, "search": s.queries + s.holdout + s.queries_per_iteration,
                "mtv": s.queries + s.mtv_holdout + s.mtv_queries_per_iteration}[stage]
        return f"exact if the support pool has >= {need:,} items (assumed {data.n_support:,})"

    # ---- memory and artifacts (bytes)
    weight_dtype = {"auto": "bfloat16"}.get(config.dtype, config.dtype)
    memory = stage_memory(g, s, counts, {"many": many.longest, "answer": with_answer.longest,
                                         "eval": max(lengths[n].longest + reserve for n in method_shots.values())},
                          config.batch_size, BYTES[weight_dtype])
    artifacts = stage_artifacts(g, s, counts, str(config.workspace) if config.workspace else "W")

    # ---- time
    rates = config.throughput or {}

    def seconds(stage: str, forwards: int) -> float | None:
        rate = rates.get(stage, rates.get("*"))
        return None if rate is None else forwards / rate

    stages: dict[str, Any] = {}
    formulas = _formulas(s, counts)
    tokens = {
        "scan": {"zero-shot": zero.as_dict(), f"{s.shots}-shot": many.as_dict()},
        "bank": {f"{s.shots}-shot": many.as_dict()} if counts["bank"]["forwards"] else {},
        "search": {"zero-shot + answer": with_answer.as_dict()},
        "mtv": {"zero-shot + answer": with_answer.as_dict()} if counts["mtv"]["kinds"] else {},
        "eval": {m: {**lengths[n].as_dict(), "generated": reserve} for m, n in method_shots.items()},
    }
    for stage in STAGES:
        forwards = counts[stage]["forwards"]
        stages[stage] = {
            "forwards": forwards,
            "basis": basis(stage),
            "formula": formulas[stage],
            "prompt_tokens": tokens[stage],
            "memory_bytes": memory[stage],
            "artifacts": artifacts[stage],
            "seconds": seconds(stage, forwards),
        }
    total_seconds = [stages[st]["seconds"] for st in STAGES]
    plan = {
        "model": {
            "name": model.name, "hub_id": model.hub_id, "family": model.family, "source": model.source,
            "n_layers": g.n_layers, "n_heads": g.n_heads, "head_dim": g.head_dim, "kv_heads": g.kv_heads,
            "heads": g.n_layers * g.n_heads,
            "context_length": context, "trained_length": trained, "sliding_window": g.sliding_window,
            "image_tokens": count.per_image,
            "image_tokens_note": _image_note(model, config.image_size), "parameters": g.parameters,
            "notes": model.notes, "chat_template": model.chat_template,
            "dtype": config.dtype, "weights_dtype": weight_dtype, "batch_size": config.batch_size,
            "prefix_sharing": model.family in PREFIX_SHARING_FAMILIES,
        },
        "task": {"name": task.name, "kind": task.kind, "shots": s.shots, "default_shots": task.default_shots,
                 "max_new_tokens": reserve},
        "data": {"source": data.source, "read": data.read, "support": data.n_support,
                 "evaluation": data.n_evaluation},
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.__dict__.items()},
        "tokens": {"how": count.how, "per_image": count.per_image},
        "stages": stages,
        "methods": counts["eval"]["methods"],
        "total": {"forwards": sum(stages[st]["forwards"] for st in STAGES),
                  "seconds": None if None in total_seconds else sum(total_seconds)},
        "throughput": rates or None,
        "assumptions": assumptions,
        "warnings": warnings,
    }
    return plan


def stage_memory(g: ModelGeometry, s: StageSettings, counts: dict[str, Any], longest: dict[str, int], batch: int,
                 weight_bytes: int) -> dict[str, dict[str, int]]:
    """Bytes each stage holds beyond the weights: what it keeps of the activations
    (float32, as the stages store them) and the KV cache of a batch of ``batch`` rows of
    its longest prompt (``longest``: many-shot, zero-shot + answer, eval) in the weights'
    dtype (2 x layers x KV heads x head_dim per token; attention scores and hidden states
    of the forward itself are not counted: they depend on the attention implementation)."""
    L, H, D, K = g.n_layers, g.n_heads, g.head_dim, s.top_k
    act = L * H * D * 4  # one [L, H, D] float32 activation set
    kv = 2 * L * g.kv_heads * D * weight_bytes  # per token
    choices = s.clusters + int(s.mean_choice) + int(s.keep_choice)
    nq, kept = counts["scan"]["queries"], counts["scan"]["kept"]
    return {
        # the scan keeps whole [L, H, D] rows of its first queries until K is chosen, streams
        # a batch of zero- and many-shot rows into running sums, and keeps per-query scores
        # under its three sensitivities
        "scan": {"kept_activations": kept * act, "batch_activations": 2 * min(batch, nq) * act,
                 "means_and_sums": 2 * act, "per_query_scores": 3 * nq * L * H * 4,
                 "kv_cache_batch": batch * longest["many"] * kv},
        "bank": {"contexts": s.contexts * K * D * 4, "bank": K * s.clusters * D * 4,
                 "kv_cache_batch": batch * longest["many"] * kv if counts["bank"]["forwards"] else 0},
        "search": {"choices": K * choices * D * 4, "batch_vectors": batch * K * D * 4,
                   "kv_cache_batch": batch * longest["answer"] * kv},
        "mtv": {"means": 2 * act, "kv_cache_batch": batch * longest["answer"] * kv} if counts["mtv"]["kinds"] else {},
        "eval": {"kv_cache_batch": batch * longest["eval"] * kv},
    }


def stage_artifacts(g: ModelGeometry, s: StageSettings, counts: dict[str, Any], root: str
                    ) -> dict[str, dict[str, int | None]]:
    """Each stage's files (``artifacts.KINDS``) and the bytes of their tensors (float32
    activations, int64 locations and counts; the JSON metadata adds a few KB)."""
    from stvcli.artifacts import KINDS

    L, H, D, K = g.n_layers, g.n_heads, g.head_dim, s.top_k
    act = L * H * D * 4
    choices = s.clusters + int(s.mean_choice) + int(s.keep_choice)
    nq, kept = counts["scan"]["queries"], counts["scan"]["kept"]

    def path(kind: str) -> str:
        return f"{root}/{KINDS[kind].file}"

    return {
        "scan": {path("scan"): L * H * 4 + K * 16 + 2 * act + nq * L * H * 4,  # scores, locations, means, per query
                 path("activations"): kept * K * D * 4 + K * 16},
        "bank": {path("bank"): K * s.clusters * D * 4 + K * s.clusters * 8 + K * 16 + K * D * 4},
        # at most K edited locations (vectors, baseline, logits, choices) plus the searched ones
        "search": {path("vectors"): 2 * K * D * 4 + 2 * K * choices * 4 + 2 * K * 16 + 2 * K * 8},
        "mtv": {path(kind): 2 * act + L * H * 4 for kind in counts["mtv"]["kinds"]},  # means, zero means, logits
        "eval": {f"{root}/results.json": None},
    }


def _method_shots(method: str) -> int:
    base, _, icl = method.partition("+")
    spec = base if base.startswith("icl:") else icl
    return int(spec[4:]) if spec.startswith("icl:") else 0


def _image_note(model: ModelInfo, size: tuple[int, int]) -> str:
    g = model.geometry
    if not g.vision:
        return "text-only"
    if g.image_grid:
        return f"dynamic: {size[0]}x{size[1]} px -> {dynamic_image_tokens(size, g.image_grid)} + {g.image_extra}"
    if g.image_tokens is None:
        return "unknown"
    return f"{g.image_tokens}" + (f" + {g.image_extra} around each" if g.image_extra else "")


def _formulas(s: StageSettings, counts: dict[str, Any]) -> dict[str, str]:
    scan, bank, search, mtv, ev = (counts[k] for k in STAGES)
    search_parts = [f"{s.iterations} iterations x {s.samples} samples x {s.queries_per_iteration} queries"]
    if search["final"]:
        search_parts.append(f"final pick: {search['finalists']} candidates x {search['holdout']} hold-out")
    if search["diagnostics"]:
        search_parts.append(f"diagnostics: {search['diagnostics'] // max(1, search['diagnosed'])} draws x "
                            f"{search['diagnosed']} items")
    if mtv["kinds"]:
        per = (f"{s.mtv_iterations} x {s.mtv_samples} samples x {s.mtv_queries_per_iteration} query + best of "
               f"{s.mtv_best_of} x {mtv['holdout'] or 1} hold-out")
        mtv_formula = per + (f", for each of {', '.join(mtv['kinds'])}" if len(mtv["kinds"]) > 1 else "") + (
            f" (its means: the scan's {scan['queries']} many-shot forwards, counted in its build forwards)")
    else:
        mtv_formula = "not run (no mtv method in --methods)"
    return {
        "scan": f"2 x {scan['queries']} queries (zero-shot + {s.shots}-shot)",
        "bank": (f"T - T0 = {s.contexts} - {scan['kept']} contexts (the scan keeps {scan['kept']})"
                 if bank["forwards"] else f"0: the scan's {scan['kept']} kept contexts cover T = {s.contexts}"),
        "search": " + ".join(search_parts),
        "mtv": mtv_formula,
        "eval": f"{ev['items']:,} items x {len(s.methods)} methods (one generation = 1 forward)",
    }


# ----------------------------------------------------------------------------- printing
MEMORY_LABELS = {
    "kept_activations": "kept many-shot rows [T0, L, H, D] (until K is chosen)",
    "batch_activations": "a batch's zero+many rows",
    "means_and_sums": "zero/many means [L, H, D]",
    "per_query_scores": "per-query scores",
    "kv_cache_batch": "KV cache of a batch",
    "contexts": "contexts [T, K, D]",
    "bank": "bank [K, M, D]",
    "choices": "choices [K, M', D]",
    "batch_vectors": "a batch's vectors",
    "means": "means + zero means [L, H, D]",
}
def render_plan(plan: dict[str, Any]) -> str:
    """The plan as text: model, data, a table per stage, methods, assumptions, warnings."""
    m, t, d = plan["model"], plan["task"], plan["data"]
    lines = [
        f"stv plan: {m['name']}" + (f" ({m['hub_id']})" if m["hub_id"] and m["hub_id"] != m["name"] else "")
        + f" on {t['name']}, {t['shots']} shots",
        f"model   {m['n_layers']} layers x {m['n_heads']} heads x head_dim {m['head_dim']} ({m['heads']:,} heads, "
        f"{m['kv_heads']} KV heads); context {m['context_length']:,} tokens"
        + (f" (trained at {m['trained_length']:,})" if m["trained_length"] else "")
        + (f", sliding window {m['sliding_window']:,}" if m["sliding_window"] else "")
        + f"; image tokens: {m['image_tokens_note']}",
        f"        {human_count(m['parameters'])} parameters; geometry from {m['source']}",
        f"data    {d['source']}: {d['support']:,} support, {d['evaluation']:,} evaluation items"
        + (" (read)" if d["read"] else " (assumed, see below)"),
        f"tokens  {plan['tokens']['how']}"
        + ("; chat template on" if m["chat_template"] else ""),
        "",
    ]
    header = f"{'stage':<7} {'forwards':>10}  {'time':>8}  basis"
    lines += [header, "-" * len(header)]
    for stage, info in plan["stages"].items():
        time = human_seconds(info["seconds"]) if info["seconds"] is not None else "-"
        lines.append(f"{stage:<7} {info['forwards']:>10,}  {time:>8}  {info['basis']}")
    total = plan["total"]
    time = human_seconds(total["seconds"]) if total["seconds"] is not None else "-"
    lines.append(f"{'total':<7} {total['forwards']:>10,}  {time:>8}")
    if plan["throughput"]:
        rates = ", ".join(f"{k if k != '*' else 'default'} {v:g}/s" for k, v in plan["throughput"].items())
        lines.append(f"time = forwards / throughput ({rates}); one rate per stage: longer prompts run slower")
        if m["prefix_sharing"]:
            lines.append(f"  ({m['family']} shares prefixes: a search or MTV forward is a one-token step over a cached "
                         "prompt, far cheaper than a scan forward; give those stages their own rate)")
    for stage, info in plan["stages"].items():
        lines += ["", f"{stage}: {info['forwards']:,} forwards = {info['formula']}"]
        for kind, n in info["prompt_tokens"].items():
            extra = f" + up to {n['generated']} generated" if "generated" in n else ""
            same = n["mean"] == n["longest"]
            value = f"~{n['mean']:,}" if same else f"mean ~{n['mean']:,}, longest ~{n['longest']:,}"
            lines.append(f"  tokens   {kind}: {value}{extra}")
        memory = {MEMORY_LABELS.get(k, k): v for k, v in info["memory_bytes"].items() if v}
        if memory:
            lines.append("  memory   " + ", ".join(f"{k} {human_bytes(v)}" for k, v in memory.items()))
        for path, size in info["artifacts"].items():
            lines.append(f"  writes   {path}" + (f" (~{human_bytes(size)})" if size else ""))
    auto = " (--dtype auto: bfloat16 on a GPU, float32 on CPU: twice this)" if m["dtype"] == "auto" else ""
    lines += ["", f"weights: {human_bytes(m['parameters'] * BYTES[m['weights_dtype']])} in {m['weights_dtype']}{auto}; "
                  f"KV caches above in {m['weights_dtype']}, batches of {m['batch_size']} rows (--batch-size)"]
    lines += ["", "methods (results.json): build forwards / eval forwards"]
    for name, info in plan["methods"].items():
        lines.append(f"  {name:<18} {info['build_forwards']:>10,} / {info['eval_forwards']:,}")
    if m["notes"]:
        lines += ["", f"model notes: {m['notes']}"]
    if plan["assumptions"]:
        lines += ["", "assumptions:"] + [f"  - {a}" for a in plan["assumptions"]]
    if plan["warnings"]:
        lines += ["", "warnings:"] + [f"  ! {w}" for w in plan["warnings"]]
    return "\n".join(lines)

