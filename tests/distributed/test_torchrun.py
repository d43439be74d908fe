"""Data parallelism under torchrun on CPU (gloo): two ranks against one process.

One launch of ``torchrun --nproc_per_node 2 --standalone --max-restarts 1`` runs the
pipeline (tests/distributed/torchrun_worker.py) on the tiny LLaVA bed; rank 0 is killed right
after writing its scan shard, torchrun restarts the group, and the rerun must reuse
that shard and finish. Its artifacts are compared with a single-process run of the same
settings. Batch sizes are chosen so that every forward sees the same rows in both runs
(scan 4 = half the queries, search and eval 1), which makes the comparison exact: any
mix-up in sharding or merging shows as a difference, not as float noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stvcli.workspace import Workspace

pytestmark = pytest.mark.dist

HERE = Path(__file__).parent
WORKER = HERE / "torchrun_worker.py"
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RESTART_COUNT")


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> dict:
    from stvcli.data.synthetic import write_vqa_jsonl
    from stvcli.testing.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("dist")
    return {"root": root, "model": str(save_tiny_model("llava", root / "model")),
            "data": str(write_vqa_jsonl(root / "data", n=60, seed=3))}


@pytest.fixture(scope="module")
def single(bed) -> dict:
    sys.path.insert(0, str(HERE))
    try:
        from torchrun_worker import run_pipeline
    finally:
        sys.path.remove(str(HERE))
    workspace = bed["root"] / "single"
    return {"workspace": workspace, **run_pipeline(bed["model"], bed["data"], workspace)}


@pytest.fixture(scope="module")
def two_ranks(bed) -> dict:
    workspace, out = bed["root"] / "two", bed["root"] / "two-out"
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(OMP_NUM_THREADS="1", STV_TEST_CRASH_AFTER_SHARD="scan:0", TOKENIZERS_PARALLELISM="false",
               # without it a restarted group can read the dead attempt's addresses from the shared
               # rendezvous store (pytorch/pytorch#135712); docs/scaling.md says the same for users
               TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "--max-restarts", "1", "--monitor-interval", "0.2", str(WORKER), bed["model"], bed["data"],
               str(workspace), str(out)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    (bed["root"] / "torchrun.log").write_text(log)
    assert proc.returncode == 0, log[-4000:]
    ranks = [torch.load(out / f"rank-{r}.pt") for r in range(2)]
    return {"workspace": workspace, "log": log, "ranks": ranks}


def _artifact(workspace: Path, kind: str):
    return Workspace(workspace).load(kind)


def test_scan_bank_search_eval_match_one_process(single, two_ranks):
    one, two = single["workspace"], two_ranks["workspace"]
    a, b = _artifact(one, "scan"), _artifact(two, "scan")
    assert torch.equal(a["locations"], b["locations"])
    for name in ("scores", "query_scores", "zero_mean", "many_mean"):  # means: summation order may differ
        assert torch.allclose(a[name], b[name], rtol=1e-6, atol=1e-7), name
    assert a.meta["extra"]["query_uids"] == b.meta["extra"]["query_uids"]
    assert b.meta["extra"]["stats"]["forwards"] == 16 and b.meta["extra"]["stats"]["world_size"] == 2
    kept_a, kept_b = _artifact(one, "activations"), _artifact(two, "activations")
    assert torch.allclose(kept_a["activations"], kept_b["activations"], rtol=1e-6, atol=1e-7)

    bank_a, bank_b = _artifact(one, "bank"), _artifact(two, "bank")
    assert torch.equal(bank_a["counts"], bank_b["counts"])
    assert torch.allclose(bank_a["bank"], bank_b["bank"], rtol=1e-6, atol=1e-7)
    assert bank_b.meta["extra"]["stats"]["forwards"] == 3  # 11 contexts - 8 kept by the scan, over 2 ranks

    vec_a, vec_b = _artifact(one, "vectors"), _artifact(two, "vectors")
    assert torch.equal(vec_a["choices"], vec_b["choices"])
    assert torch.allclose(vec_a["logits"], vec_b["logits"], atol=1e-6)
    assert vec_a.meta["extra"]["rewards"] == pytest.approx(vec_b.meta["extra"]["rewards"], abs=1e-6)

    mtv_a, mtv_b = _artifact(one, "mtv"), _artifact(two, "mtv")
    assert torch.equal(mtv_a["locations"], mtv_b["locations"])
    assert torch.allclose(mtv_a["logits"], mtv_b["logits"], atol=1e-6)

    results_a = json.loads((one / "eval" / "results.json").read_text())
    results_b = json.loads((two / "eval" / "results.json").read_text())
    assert results_a["results"] == results_b["results"]
    assert results_b["results"]["vqa"]["stv"]["n"] == 5
    assert (one / "eval" / "samples_vqa.jsonl").read_text() == (two / "eval" / "samples_vqa.jsonl").read_text()


def test_every_rank_holds_the_same_policy_and_results(single, two_ranks):
    rank0, rank1 = two_ranks["ranks"]
    for name in ("logits", "choices", "bank", "counts"):
        assert torch.equal(rank0[name], rank1[name]), name  # identical on all ranks, not merely close
        assert torch.allclose(rank0[name].float(), single[name].float(), atol=1e-6), name
    assert rank0["rewards"] == rank1["rewards"]
    assert rank0["results"] == rank1["results"] == single["results"]


def test_a_rank_killed_mid_scan_is_rerun_reusing_the_finished_shard(two_ranks):
    log, workspace = two_ranks["log"], two_ranks["workspace"]
    # first attempt: rank 0 wrote its shard, then died before the merge; torchrun restarted the group
    assert log.count("[rank 0/2] scan: wrote") == 1, log[-4000:]
    assert "[rank 0/2] scan: reusing the finished shard" in log, log[-4000:]
    stats = _artifact(workspace, "scan").meta["extra"]["stats"]
    assert 0 in stats["reused_shards"]
    assert not (workspace / "shards").exists()  # merged shards are removed
