"""The example scripts in examples/ run end to end, as a user would run them, on tiny models.

Each script runs with bash in a temporary directory, `stv` (and torchrun) from this
venv first on PATH, and its sizes shrunk through the environment variables every script
reads (the defaults are the paper's: the dry runs below check that). Local data stands
in for the hub: a VQA JSONL split by EVAL_LIMIT (VizWiz), support and evaluation JSONLs
(OK-VQA), an image folder by class (Flowers), MTV episode files with IMAGE_ROOT (CUB),
split image folders `dir:train` / `dir:test` (DTD), and the shipped
examples/text-tasks/plural for the text script. The VLM is a tiny random Idefics2 whose
context is widened to 4096 positions (episode prompts with the tiny byte-level tokenizer
pass 512); the text model a tiny random Llama.

Each run takes a few seconds of model work; the rest is starting Python, torch and
transformers once per stage (6 processes a script, twice that under torchrun with 2 ranks).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stvcli.artifacts import load_artifact
from stvcli.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
CLASSES = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown")
BENCHMARKS = {  # script -> task default data and shots (checked against `stv tasks` below)
    "vizwiz": ("lmms-lab/VizWiz-VQA", 16),
    "okvqa": ("lmms-lab/OK-VQA", 4),
    "flowers": ("dpdl-benchmark/oxford_flowers102", 4),
    "cub": ("bentrevett/caltech-ucsd-birds-200-2011", 4),
    "dtd": ("tanganke/dtd", 4),
}
#: The tiny settings every end-to-end run uses (K = 4 of the tiny model's 2 x 4 heads, M = 2).
TINY = dict(SHOTS="1", QUERIES="6", TOP_K="4", CLUSTERS="2", CONTEXTS="6", ITERATIONS="2", SAMPLES="2",
            QUERIES_PER_ITERATION="1", METHODS="zero-shot,icl:1,stv", QUIET="1")
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RESTART_COUNT")


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> dict[str, Path]:
    from stvcli.data import synthetic
    from stvcli.testing.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("examples")
    idefics2 = save_tiny_model("idefics2", root / "idefics2")
    config_path = idefics2 / "config.json"
    config = json.loads(config_path.read_text())
    config["text_config"]["max_position_embeddings"] = 4096  # room for few-shot episode prompts
    config_path.write_text(json.dumps(config))
    cub = root / "cub"
    synthetic.write_episodes(cub, CLASSES[:4], per_class=4, seed=1, name="train.json")
    synthetic.write_episodes(cub, CLASSES[4:], per_class=2, seed=2, name="test.json")
    return {
        "root": root,
        "idefics2": idefics2,
        "llama": save_tiny_model("llama", root / "llama"),
        "vqa": synthetic.write_vqa_jsonl(root / "vqa", n=40, seed=1),
        "okvqa_train": synthetic.write_vqa_jsonl(root / "okvqa", n=30, seed=2, name="train.jsonl"),
        "okvqa_test": synthetic.write_vqa_jsonl(root / "okvqa", n=6, seed=3, name="test.jsonl"),
        "flowers": synthetic.write_classification_imagefolder(root / "flowers", CLASSES, per_class=4),
        "cub": cub,
        "dtd": synthetic.write_classification_imagefolder(root / "dtd", CLASSES, per_class=3, splits=("train", "test")),
    }


def base_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith("SLURM_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    for name in ("MODEL", "DATA", "EVAL_DATA", "SHOTS", "TOP_K", "WORKSPACE", "OUT", "NPROC", "TASK", "DRY_RUN",
                 "STV_EXAMPLES", "STV_API_KEY", "NAME", "MODEL_TAG", "IMAGE_ROOT", "EVAL_LIMIT"):
        env.pop(name, None)  # only what a test sets
    env.update(settings)
    return env


def run_script(script: str, cwd: Path, timeout: float = 300, **settings: str) -> str:
    """bash examples/<script> in ``cwd``; its whole process group is killed on a timeout
    (serve.sh has a server in the background). Returns stdout + stderr; asserts exit 0."""
    proc = subprocess.Popen(["bash", str(EXAMPLES / script)], cwd=cwd, env=base_env(**settings),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"{script} ran past {timeout}s:\n{log[-4000:]}")
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{log[-6000:]}"
    return log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_outputs(tmp: Path, task: str, n_eval: int, name: str | None = None, world_size: int = 1) -> None:
    """The pipeline's artifacts: the tiny sizes reached the stages, the workspace's results
    and pictures exist, and the copied vectors were evaluated from the file alone."""
    name = name or task
    workspace, out = tmp / "ws", tmp / "out"
    scan = Workspace(workspace).load("scan")
    assert tuple(scan["locations"].shape) == (4, 2)  # TOP_K
    assert scan.meta["extra"]["stats"].get("world_size", 1) == world_size
    bank = Workspace(workspace).load("bank")
    assert tuple(bank["bank"].shape[:2]) == (4, 2)  # K x CLUSTERS
    assert len(Workspace(workspace).load("vectors").meta["extra"]["history"]["rewards"]) == 2  # ITERATIONS

    results = json.loads((workspace / "results.json").read_text())["results"][task]
    assert set(results) == {"zero-shot", "icl:1", "stv"}  # METHODS
    for picture in ("sensitivity", "search_rewards", "search_diagnostics", "accuracy"):
        assert (workspace / f"{picture}.png").stat().st_size > 0, picture

    vectors = out / f"{name}.safetensors"
    assert vectors.read_bytes() == (workspace / "vectors.safetensors").read_bytes()
    load_artifact(vectors, "vectors")  # a valid vectors artifact on its own
    report = json.loads((out / name / "results.json").read_text())
    assert set(report["results"][task]) == {"zero-shot", "stv"}
    assert report["results"][task]["stv"]["n"] == report["results"][task]["zero-shot"]["n"] == n_eval
    assert report["config"]["vectors"] == f"out/{name}.safetensors"
    same = ("accuracy", "ci_low", "ci_high", "n")  # the file alone gives the workspace's STV result
    assert {k: report["results"][task]["stv"][k] for k in same} == {k: results["stv"][k] for k in same}


def vlm(bed, tmp: Path, **settings: str) -> dict[str, str]:
    return {**TINY, "MODEL": str(bed["idefics2"]), "WORKSPACE": "ws", "OUT": "out", **settings}


# -- the benchmark scripts, end to end ------------------------------------------------------


def test_vizwiz_script(bed, tmp_path):
    run_script("vizwiz.sh", tmp_path, **vlm(bed, tmp_path, DATA=str(bed["vqa"]), EVAL_LIMIT="6", SHOTS="2"))
    check_outputs(tmp_path, "vizwiz", n_eval=6)


def test_okvqa_script(bed, tmp_path):
    run_script("okvqa.sh", tmp_path, **vlm(bed, tmp_path, DATA=str(bed["okvqa_train"]),
                                           EVAL_DATA=str(bed["okvqa_test"])))
    check_outputs(tmp_path, "okvqa", n_eval=6)


def test_flowers_script(bed, tmp_path):
    # an image folder by class: classes split between support and evaluation episodes
    run_script("flowers.sh", tmp_path, **vlm(bed, tmp_path, DATA=str(bed["flowers"]), LIMIT="4"))
    check_outputs(tmp_path, "flowers", n_eval=4)


def test_cub_script(bed, tmp_path):
    # MTV's episode files, image paths (./images/...) under IMAGE_ROOT
    cub = bed["cub"]
    run_script("cub.sh", tmp_path, **vlm(bed, tmp_path, DATA=str(cub / "train.json"), EVAL_DATA=str(cub / "test.json"),
                                         IMAGE_ROOT=str(cub)))
    check_outputs(tmp_path, "cub", n_eval=8)  # 4 evaluation classes x 2 images, one episode each


def test_dtd_script(bed, tmp_path):
    # split image folders, named as `dir:split`
    run_script("dtd.sh", tmp_path, **vlm(bed, tmp_path, DATA=f"{bed['dtd']}:train", EVAL_DATA=f"{bed['dtd']}:test",
                                         LIMIT="4"))
    check_outputs(tmp_path, "dtd", n_eval=4)


def test_text_script_on_the_shipped_text_task(bed, tmp_path):
    log = run_script("text.sh", tmp_path, **{**TINY, "MODEL": str(bed["llama"]), "WORKSPACE": "ws", "OUT": "out",
                                             "TEXT_TASK": "plural", "EVAL_LIMIT": "4"})
    check_outputs(tmp_path, "text", n_eval=4, name="text-plural")
    assert f"--data {EXAMPLES}/text-tasks/plural/train.jsonl" in log
    assert f"--eval-data {EXAMPLES}/text-tasks/plural/test.jsonl" in log


# -- several processes ----------------------------------------------------------------------


@pytest.mark.dist
def test_torchrun_script_two_ranks(bed, tmp_path):
    log = run_script("torchrun.sh", tmp_path, timeout=420, **vlm(bed, tmp_path, TASK="vizwiz", NPROC="2",
                                                                 DATA=str(bed["vqa"]), EVAL_LIMIT="6"))
    assert "torchrun --standalone --nproc_per_node 2 -m stvcli.cli scan" in log
    check_outputs(tmp_path, "vizwiz", n_eval=6, world_size=2)


@pytest.mark.dist
def test_slurm_script_runs_outside_slurm_on_one_node(bed, tmp_path):
    port = free_port()
    log = run_script("slurm.sh", tmp_path, **vlm(bed, tmp_path, TASK="okvqa", NPROC="1", RDZV_PORT=str(port),
                                                 DATA=str(bed["okvqa_train"]), EVAL_DATA=str(bed["okvqa_test"])))
    assert f"torchrun --nnodes 1 --nproc_per_node 1 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{port}" in log
    assert "srun" not in log
    check_outputs(tmp_path, "okvqa", n_eval=6)


# -- serving ----------------------------------------------------------------------------------


def test_serve_script_answers_with_and_without_vectors_then_stops(bed, tmp_path):
    port = free_port()
    image = sorted((bed["vqa"].parent / "images").glob("*.png"))[0]
    log = run_script("serve.sh", tmp_path, **vlm(bed, tmp_path, TASK="vizwiz", PORT=str(port), IMAGE=str(image),
                                                 QUESTION="What colour is the picture? Answer:", MAX_TOKENS="3",
                                                 WAIT_S="120", DATA=str(bed["vqa"]), EVAL_LIMIT="6", SHOTS="2"))
    check_outputs(tmp_path, "vizwiz", n_eval=6)
    bare = json.loads((tmp_path / "out" / "serve-bare.json").read_text())
    tuned = json.loads((tmp_path / "out" / "serve-vectors.json").read_text())
    assert bare["model"] == "idefics2"  # the bare model, served under its folder's name
    assert tuned["model"].startswith("idefics2+vizwiz@")  # the vectors file's id from /v1/models
    for answer in (bare, tuned):
        assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] <= 3
        assert answer["usage"]["prompt_tokens"] > 10  # the image's tokens are in the prompt
    assert f"== models: idefics2 {tuned['model']}" in log
    assert "== server stopped" in log
    with socket.socket() as sock:  # nothing listens on the port any more
        assert sock.connect_ex(("127.0.0.1", port)) != 0


# -- the defaults are the paper's (dry runs: commands printed, nothing run) ---------------------


def dry_run(script: str, tmp: Path, **settings: str) -> list[str]:
    log = run_script(script, tmp, timeout=60, DRY_RUN="1", NPROC=settings.pop("NPROC", "8"), **settings)
    return [line[2:] for line in log.splitlines() if line.startswith("+ ")]


def test_benchmark_defaults_match_the_tasks():
    from stvcli.data.tasks import get_task

    for task, (data, shots) in BENCHMARKS.items():
        assert (get_task(task).default_data, get_task(task).default_shots) == (data, shots), task


@pytest.mark.parametrize("task", sorted(BENCHMARKS))
@pytest.mark.parametrize("model", ["idefics2", "qwen-vl"])
def test_benchmark_script_uses_the_papers_settings(task, model, tmp_path):
    data, shots = BENCHMARKS[task]
    commands = dry_run(f"{task}.sh", tmp_path, MODEL=model)
    scan, bank, search, evaluate, report, mkdir, copy, final = commands
    trust = " --trust-remote-code" if model == "qwen-vl" else ""
    assert scan == (f"stv scan --model {model} --task {task} --workspace runs/{task}-{model} --queries 100 --seed 0 "
                    f"--data {data} --shots {shots} --top-k 300{trust}")
    assert bank == f"stv bank --workspace runs/{task}-{model} --clusters 32 --seed 0"
    assert search == (f"stv search --workspace runs/{task}-{model} --iterations 300 --samples 32 --seed 0 "
                      "--queries-per-iteration 4")
    assert evaluate.startswith(f"stv eval --workspace runs/{task}-{model} --methods zero-shot,icl:4,mtv,stv "
                               "--mtv-iterations 600")
    assert report == f"stv report --workspace runs/{task}-{model}"
    assert copy == f"cp runs/{task}-{model}/vectors.safetensors out/{model}/{task}.safetensors"
    assert final.startswith(f"stv eval --vectors out/{model}/{task}.safetensors --methods zero-shot,stv")


def test_torchrun_script_launches_every_stage_under_torchrun(tmp_path):
    commands = dry_run("torchrun.sh", tmp_path, TASK="cub", MODEL="qwen-vl", NPROC="8")
    stages = [c for c in commands if c.startswith("torchrun")]
    assert [c.split(" -m stvcli.cli ")[1].split()[0] for c in stages] == ["scan", "bank", "search", "eval", "eval"]
    assert all(c.startswith("torchrun --standalone --nproc_per_node 8 -m stvcli.cli ") for c in stages)
    assert "--task cub" in stages[0] and "--top-k 300" in stages[0] and "--trust-remote-code" in stages[0]
    assert stages[-1].endswith("--vectors out/qwen-vl/cub.safetensors --methods zero-shot,stv "
                               "--output-path out/qwen-vl/cub --seed 0")


def test_slurm_script_under_sbatch(tmp_path):
    text = (EXAMPLES / "slurm.sh").read_text()
    for line in ("#SBATCH --nodes=", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node="):
        assert line in text
    # sbatch runs a spool copy of the script: it finds lib.sh through $SLURM_SUBMIT_DIR
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(EXAMPLES / "slurm.sh", spool / "slurm_script")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text("#!/bin/sh\nprintf 'gpu-node7\\ngpu-node8\\n'\n")
    (fake / "scontrol").chmod(0o755)
    env = base_env(DRY_RUN="1", SLURM_JOB_ID="4242", SLURM_JOB_NUM_NODES="2", SLURM_JOB_NODELIST="gpu-node[7-8]",
                   SLURM_GPUS_ON_NODE="8", SLURM_SUBMIT_DIR=str(ROOT))
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", str(spool / "slurm_script")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stages = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ srun")]
    assert len(stages) == 5  # scan bank search eval eval; report runs once, on the first node
    for n, command in enumerate(stages, 1):
        assert command.startswith("srun --nodes 2 --ntasks-per-node 1 --kill-on-bad-exit=1 torchrun --nnodes 2 "
                                  "--nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint gpu-node7:29500 "
                                  f"--rdzv-id stv-4242-{n}-")
    assert "--top-k 300" in stages[0] and "--clusters 32" in stages[1] and "--iterations 300" in stages[2]


def test_text_script_defaults(tmp_path):
    scan = dry_run("text.sh", tmp_path)[0]
    assert scan == (f"stv scan --model gemma3 --task text --workspace runs/text-plural-gemma3 --queries 100 --seed 0 "
                    f"--data {EXAMPLES}/text-tasks/plural/train.jsonl "
                    f"--eval-data {EXAMPLES}/text-tasks/plural/test.jsonl "
                    "--shots 16")  # no --top-k: 300/1024 of the model's heads (Gemma-3-270m has 72)


def test_scripts_parse_and_are_executable():
    scripts = sorted(EXAMPLES.glob("*.sh"))
    assert {s.name for s in scripts} >= {f"{t}.sh" for t in BENCHMARKS} | {"lib.sh", "torchrun.sh", "slurm.sh",
                                                                          "serve.sh", "text.sh"}
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        if script.name != "lib.sh":  # sourced, not run
            assert os.access(script, os.X_OK), script
            assert "set -euo pipefail" in script.read_text(), script
