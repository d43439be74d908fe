"""The real tier: backbone conversion and the shapes model (minutes on first run, then cached).

Uses the stv cache ($STV_CACHE or ~/.cache/stv), so a second run takes seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

BACKBONES = ["smollm2", "gemma3"]


@pytest.fixture(scope="module", params=BACKBONES)
def built(request: pytest.FixtureRequest) -> tuple[str, Path]:
    from stvcli.shapes.build import ensure_shapes_model

    return request.param, ensure_shapes_model(request.param, quiet=True)


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_converts_and_does_icl(name: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stvcli.cache import verify_manifest
    from stvcli.shapes.backbones import ensure_backbone

    directory = ensure_backbone(name, quiet=True)
    assert verify_manifest(directory) is None
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    inputs = tokenizer("France: Paris\nJapan: Tokyo\nItaly: Rome\nGermany:", return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert tokenizer.decode(output[0, inputs["input_ids"].shape[1] :]).strip().startswith("Berlin")


def test_loads_like_a_hub_model(built: tuple[str, Path]) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPImageProcessorPil

    from stvcli.shapes.world import Scene, draw

    _, directory = built
    model = AutoModelForImageTextToText.from_pretrained(directory, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(directory)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert isinstance(processor.image_processor, CLIPImageProcessorPil)
    image = draw(Scene(1, "red", "circle", "big", "top", seed=0))
    inputs = processor(text=["<image> Answer: red\n<image> Answer:"], images=[image, image], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == 8
    with torch.inference_mode():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_image_tokens_sit_on_their_words(built: tuple[str, Path]) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stvcli.shapes.build import nearest_word_accuracy

    _, directory = built
    model = AutoModelForImageTextToText.from_pretrained(directory, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(directory)
    assert nearest_word_accuracy(model, processor, processor.tokenizer, n_images=64, seed=11) > 0.9


def test_every_label_is_one_token(built: tuple[str, Path]) -> None:
    from transformers import AutoTokenizer

    from stvcli.shapes.build import single_token_ids
    from stvcli.shapes.variants import single_token_labels
    from stvcli.shapes.world import DESCRIPTION_WORDS

    _, directory = built
    tokenizer = AutoTokenizer.from_pretrained(directory)
    words = sorted({*DESCRIPTION_WORDS, *single_token_labels()})
    ids = single_token_ids(tokenizer, words)
    assert len(set(ids)) == len(ids)


def test_reuse_is_fast_and_adapter_does_icl(built: tuple[str, Path]) -> None:
    from stvcli.config import ModelOptions
    from stvcli.data.loading import load_task_data
    from stvcli.data.options import DataOptions
    from stvcli.data.sampling import demonstrations_for
    from stvcli.models.loading import load_model
    from stvcli.scoring import generate
    from stvcli.shapes.build import ensure_shapes_model

    backbone, directory = built
    start = time.perf_counter()
    assert ensure_shapes_model(backbone, quiet=True) == directory
    assert time.perf_counter() - start < 30
    adapter = load_model(ModelOptions(model=str(directory), dtype="float32", device="cpu"))
    assert adapter.family == "llava"
    data = load_task_data(DataOptions(task="shapes-color", eval_limit=16))
    task, items = data.task, data.evaluation

    def accuracy(shots: int) -> float:
        prompts = [task.build_prompt(i, demonstrations_for(data, i, shots, 0) if shots else ()) for i in items]
        generations = generate(adapter, prompts, task.max_new_tokens)
        return sum(task.score(task.extract(g), i) for g, i in zip(generations, items)) / len(items)

    assert accuracy(0) < 0.4
    assert accuracy(8) >= 0.7
