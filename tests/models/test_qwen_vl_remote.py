"""Qwen-VL for real: a tiny random-weight model built from the hub's UNMODIFIED remote code.

The remote files live in ``../shared/fixtures/qwen-vl-remote-code`` (never copied into the
repository); a temporary model directory gets a copy of them next to a tiny config and
random weights, and stv loads it the way it loads ``Qwen/Qwen-VL --trust-remote-code``.
``visual.py`` imports ``torchvision.transforms`` at import time, and torchvision cannot be
installed for the CPU torch here: a minimal stand-in (the four transforms it uses) sits in
``sys.modules`` while the remote code is imported.
"""

from __future__ import annotations

import base64
import enum
import importlib.machinery
import io
import json
import shutil
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("tiktoken", reason="the Qwen-VL tokenizer needs tiktoken (pip install tiktoken)")
pytest.importorskip("einops", reason="the Qwen-VL modeling code needs einops (pip install einops)")

from stvcli.config import ModelOptions  # noqa: E402
from stvcli.engine import Intervention, capturing, inserting  # noqa: E402
from stvcli.errors import ModelError  # noqa: E402
from stvcli.models import remote_code  # noqa: E402
from stvcli.models.loading import load_model  # noqa: E402
from stvcli.models.qwen_vl import QwenVLAdapter  # noqa: E402
from stvcli.prompt import Prompt  # noqa: E402
from stvcli.scoring import answer_scores, forward_logits, generate  # noqa: E402

REMOTE_CODE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "qwen-vl-remote-code"
pytestmark = pytest.mark.skipif(
    not (REMOTE_CODE / "modeling_qwen.py").is_file(),
    reason=f"the Qwen-VL remote code fixture is absent ({REMOTE_CODE}: ../shared is not next to the repository)",
)

SEQ_LENGTH = 2048  # Qwen-VL's: past it, dynamic NTK and logn attention scale by length
EOD = 151643  # <|endoftext|>
# The hub config's shape, tiny: the resampler needs output_dim (= hidden) >= 128 and 256
# queries (the tokenizer's fixed image span); 28x28 images in 14x14 patches.
CONFIG = {
    "architectures": ["QWenLMHeadModel"],
    "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig", "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
    "model_type": "qwen", "vocab_size": 151936, "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 4, "kv_channels": 32, "seq_length": SEQ_LENGTH,
    "max_position_embeddings": 8192, "use_dynamic_ntk": True, "use_logn_attn": True, "use_flash_attn": "auto",
    "bf16": False, "fp16": False, "fp32": False, "rotary_emb_base": 10000, "rotary_pct": 1.0, "no_bias": True,
    "layer_norm_epsilon": 1e-6, "initializer_range": 0.02, "scale_attn_weights": True, "tie_word_embeddings": False,
    "tokenizer_type": "QWenTokenizer", "use_cache": True,
    "visual": {"heads": 2, "image_size": 28, "image_start_id": 151857, "layers": 1, "mlp_ratio": 2.0,
               "output_dim": 128, "patch_size": 14, "width": 32},
}  # fmt: skip
GENERATION = {"chat_format": "raw", "do_sample": True, "eos_token_id": EOD, "pad_token_id": EOD,
              "max_new_tokens": 512, "top_k": 0, "top_p": 0.3}


# ------------------------------------------------------------------ fixtures
def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """``torchvision`` / ``torchvision.transforms`` with what visual.py uses (PIL + torch)."""

    class InterpolationMode(enum.Enum):
        BICUBIC = "bicubic"

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, x):
            for transform in self.transforms:
                x = transform(x)
            return x

    class Resize:
        def __init__(self, size, interpolation=None):
            self.size = size

        def __call__(self, image):
            return image.resize((self.size[1], self.size[0]), Image.BICUBIC)

    class ToTensor:
        def __call__(self, image):
            return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = mean, std  # tensors made at call time: __init__ runs on the meta device

        def __call__(self, x):
            return (x - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]

    modules = {}
    for name in ("torchvision", "torchvision.transforms"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        modules[name] = module
    transforms = modules["torchvision.transforms"]
    for cls in (InterpolationMode, Compose, Resize, ToTensor, Normalize):
        setattr(transforms, cls.__name__, cls)
    modules["torchvision"].transforms = transforms
    return modules


@contextmanager
def torchvision_stand_in() -> Iterator[None]:
    """The stand-in in ``sys.modules`` while inside (only its two entries are touched)."""
    from transformers.utils import import_utils

    import_utils.is_torchvision_available()  # cached as it really is, before the stand-in appears
    stand_in = _torchvision_stand_in()
    previous = {name: sys.modules.get(name) for name in stand_in}
    sys.modules.update(stand_in)
    try:
        yield
    finally:
        for name, module in previous.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub-like Qwen-VL directory: the remote files, a tiny config, random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = tmp_path_factory.mktemp("qwen-vl") / "tiny-qwen-vl"
    directory.mkdir()
    for path in REMOTE_CODE.iterdir():
        if path.suffix in (".py", ".tiktoken", ".json"):
            shutil.copy(path, directory / path.name)
    (directory / "config.json").write_text(json.dumps(CONFIG))
    with torchvision_stand_in(), remote_code.compat():
        config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    with torch.no_grad():  # weights no initialiser would draw, so a re-initialised one shows
        generator = torch.Generator().manual_seed(1)
        for block in model.transformer.h:
            weight = block.attn.c_proj.weight
            weight.copy_(torch.rand(weight.shape, generator=generator) - 0.5)
    model.save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps(CONFIG))  # as on the hub (no precision flag set)
    (directory / "generation_config.json").write_text(json.dumps(GENERATION))
    return directory


def options(model_dir: Path) -> ModelOptions:
    return ModelOptions(model=str(model_dir), dtype="float32", device="cpu", trust_remote_code=True)


@pytest.fixture(scope="module")
def adapter(model_dir: Path) -> QwenVLAdapter:
    with torchvision_stand_in():
        loaded = load_model(options(model_dir))
    assert isinstance(loaded, QwenVLAdapter)
    return loaded


def image(seed: int, size: tuple[int, int] = (30, 30)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


PROMPTS = [
    Prompt("What is in <image>? Answer:", (image(1),)),
    Prompt("Input: hot Output:"),
    Prompt("<image> and <image> show one two three. Answer:", (image(2), image(3, (40, 24)))),
]


def c_proj_inputs(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """Independent of stv: each layer's ``attn.c_proj`` input at the last column, [B, L, width]."""
    seen: dict[int, torch.Tensor] = {}
    handles = [block.attn.c_proj.register_forward_pre_hook(
        lambda module, args, i=i: seen.__setitem__(i, args[0][:, -1].clone()))
        for i, block in enumerate(model.transformer.h)]  # fmt: skip
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([seen[i] for i in range(len(seen))], dim=1)


# ------------------------------------------------------------------ loading
def test_loading_keeps_every_checkpoint_tensor(adapter: QwenVLAdapter, model_dir: Path) -> None:
    """transformers 5 re-ran the remote _init_weights over every attn.c_proj (the hooked
    projections); the loaded model must equal its checkpoint, with nothing left on meta."""
    from safetensors.torch import load_file

    saved = load_file(str(model_dir / "model.safetensors"))
    state = adapter.model.state_dict()
    c_proj = [key for key in saved if key.endswith("attn.c_proj.weight")]
    assert len(c_proj) == CONFIG["num_hidden_layers"]
    assert not [key for key in saved if not torch.equal(saved[key], state[key])]
    for module in adapter.model.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False),
                   *(v for v in vars(module).values() if isinstance(v, torch.Tensor))]
        assert not any(t.is_meta for t in tensors), type(module).__name__
    assert adapter.model.config.fp32 and not adapter.model.config.bf16  # from --dtype, not the machine


def test_adapter_sees_the_decoder_heads_and_the_real_tokenizer(adapter: QwenVLAdapter) -> None:
    model = adapter.model
    assert adapter.projections == [block.attn.c_proj for block in model.transformer.h]
    assert (adapter.n_layers, adapter.n_heads, adapter.head_dim) == (2, 4, 32)
    assert type(adapter.tokenizer).__name__ == "QWenTokenizer"  # not its inner tiktoken Encoding
    assert adapter.tokenizer.pad_token_id == EOD
    assert {"<img>", "</img>", "<|endoftext|>", "<|extra_7|>"} <= set(adapter.reserved_text)
    assert not adapter.prefix_sharing


# ------------------------------------------------------------------ capture and scoring
def test_capture_equals_an_independent_hook_on_c_proj(adapter: QwenVLAdapter) -> None:
    inputs = adapter.encode(PROMPTS)
    assert inputs["attention_mask"].sum(1).tolist()[1] < inputs["input_ids"].shape[1]  # left padded
    with capturing(adapter) as capture, torch.no_grad():
        adapter.model(**inputs)
    captured = capture.result()
    expected = c_proj_inputs(adapter.model, inputs).view(len(PROMPTS), adapter.n_layers, adapter.n_heads, -1)
    assert torch.equal(captured, expected)
    for row, prompt in enumerate(PROMPTS):  # within seq_length, padding changes no row
        alone = c_proj_inputs(adapter.model, adapter.encode([prompt]))
        assert torch.allclose(alone.view_as(captured[row : row + 1]), captured[row : row + 1], atol=1e-5)
    other = c_proj_inputs(adapter.model, adapter.encode([Prompt(PROMPTS[0].text, (image(9),))]))
    assert not torch.allclose(other.view_as(captured[:1]), captured[:1])  # the model reads the image


def test_scores_take_only_arguments_the_model_accepts(adapter: QwenVLAdapter) -> None:
    inputs = adapter.encode(PROMPTS)
    with torch.no_grad():
        full = adapter.model(**inputs, use_cache=False).logits
    assert torch.allclose(forward_logits(adapter, inputs, keep=2), full[:, -2:].float(), atol=1e-5)
    scores = answer_scores(adapter, PROMPTS, [" red", " cold", " yes"])
    assert torch.isfinite(scores.total).all() and scores.n_tokens.tolist() == [1, 1, 1]


# ------------------------------------------------------------------ generation
def intervention(adapter: QwenVLAdapter, seed: int = 0) -> Intervention:
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(adapter.n_layers * adapter.n_heads, generator=generator)[:4]
    locations = torch.stack([chosen // adapter.n_heads, chosen % adapter.n_heads], dim=1)
    return Intervention(locations, torch.randn(4, adapter.head_dim, generator=generator) * 4)


def greedy_with_cache(adapter: QwenVLAdapter, prompts: list[Prompt], steps: int, chosen: Intervention) -> list[str]:
    """A hand-written greedy loop: prefill, then one token per step over the tuple KV cache."""
    model, inputs = adapter.model, adapter.encode(prompts)
    mask, tokens = inputs["attention_mask"], []
    with inserting(adapter, chosen.locations, chosen.vectors), torch.no_grad():
        output = model(**inputs, use_cache=True)
        for _ in range(steps):
            token = output.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(token)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            past = output["cache"] if "cache" in output else output["past_key_values"]
            output = model(input_ids=token, past_key_values=past, attention_mask=mask, use_cache=True)
    texts = []
    for row in torch.cat(tokens, dim=1).tolist():
        row = row[: row.index(EOD)] if EOD in row else row
        texts.append(adapter.tokenizer.decode(row, skip_special_tokens=True))
    return texts


def test_generation_with_vectors_equals_a_cached_greedy_loop(adapter: QwenVLAdapter) -> None:
    chosen = intervention(adapter)
    widths = []
    handle = adapter.model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append((args[0].shape[1], kwargs["past_key_values"] is None)),
        with_kwargs=True)  # QWenLMHeadModel passes input_ids by position
    try:
        texts = generate(adapter, PROMPTS, max_new_tokens=5, intervention=chosen)
    finally:
        handle.remove()
    assert texts == greedy_with_cache(adapter, PROMPTS, 5, chosen)
    prompt_width = adapter.encode(PROMPTS)["input_ids"].shape[1]
    assert widths[0] == (prompt_width, True)  # the prompt once, then one token per step over the cache
    assert widths[1:] and all(step == (1, False) for step in widths[1:])
    assert texts != generate(adapter, PROMPTS, max_new_tokens=5)  # the vectors do something


# ------------------------------------------------------------------ long prompts
def words(n: int) -> str:
    return "one" + " one" * (n - 1)


def test_padded_batches_past_seq_length_are_refused(adapter: QwenVLAdapter) -> None:
    """Past seq_length a padded row's activations depend on its batch (NTK alpha from the
    padded length, logn by column): such a forward is a one-line error, a single row is not."""
    long, short = Prompt(words(SEQ_LENGTH + 40)), Prompt("hello")
    assert adapter.token_counts([long])[0] > SEQ_LENGTH
    with pytest.raises(ModelError, match="--batch-size 1") as error:
        forward_logits(adapter, adapter.encode([long, short]))
    assert "\n" not in str(error.value)
    assert forward_logits(adapter, adapter.encode([long])).shape[0] == 1  # one row: no padding
    assert forward_logits(adapter, adapter.encode([long, long])).shape[0] == 2  # equal lengths: no padding
    near = Prompt(words(SEQ_LENGTH - 2))
    assert adapter.token_counts([near]) == [SEQ_LENGTH - 2]
    with pytest.raises(ModelError, match=f"seq_length {SEQ_LENGTH}"):  # generated tokens cross it
        generate(adapter, [near, short], max_new_tokens=4)


# ------------------------------------------------------------------ the CLI chain
def image_data_url(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def test_cli_scan_bank_search_eval_then_serve(adapter: QwenVLAdapter, model_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from stvcli.cli import app
    from stvcli.data.synthetic import write_vqa_jsonl
    from stvcli.serve.app import create_app
    from stvcli.serve.config import ServeConfig
    from stvcli.vectors import TaskVectors

    data = write_vqa_jsonl(tmp_path / "data", n=40, seed=3)
    space = str(tmp_path / "ws")
    commands = [
        ["scan", "-m", str(model_dir), "--trust-remote-code", "--dtype", "float32", "--device", "cpu", "-w", space,
         "--task", "vqa", "--data", str(data), "--eval-limit", "4", "--shots", "1", "--queries", "4", "--top-k", "4",
         "--batch-size", "4"],
        ["bank", "-w", space, "--clusters", "2", "--contexts", "4", "--batch-size", "4"],
        ["search", "-w", space, "--iterations", "2", "--samples", "4", "--queries-per-iteration", "2",
         "--holdout", "4", "--batch-size", "8"],
        ["eval", "-w", space, "--methods", "zero-shot,stv", "--limit", "2", "--batch-size", "2", "--json"],
    ]
    runner = CliRunner()
    with torchvision_stand_in():
        for command in commands:
            result = runner.invoke(app, [*command, "-q"])
            assert result.exit_code == 0, f"stv {command[0]}: {result.output}"
    report = json.loads(result.output[result.output.index("{"):])
    assert report["sources"]["vqa"]["model"]["trust_remote_code"] is True
    assert {method: row["n"] for method, row in report["results"]["vqa"].items()} == {"zero-shot": 2, "stv": 2}

    vectors_file = Path(space) / "vectors.safetensors"  # its fingerprint (c_proj weights) must match the adapter's
    served = create_app(ServeConfig(vectors=[vectors_file]), adapter)
    with TestClient(served) as client:
        model_id = next(i for i in served.state.catalog.ids() if "+" in i)
        picture = image(5)
        request = {"model": model_id, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_data_url(picture)}},
            {"type": "text", "text": "What colour is the picture?"}]}]}
        response = client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200, response.text
    answer = response.json()["choices"][0]["message"]["content"]
    vectors = TaskVectors.load(vectors_file)
    expected = generate(adapter, [Prompt("<image>What colour is the picture?", (picture,))], 4,
                        intervention=vectors.intervention())[0]
    assert answer == expected
