#!/usr/bin/env bash
# VizWiz: open VQA on photos taken by blind people (10 answers each, 'unanswerable'
# allowed), with MTV's instruction; VQA accuracy.
#
# The paper's settings: 16 shots, K = 300 heads, M = 32 clusters, 300 x 32 search,
# 100 scan queries; scan -> bank -> search -> eval -> report, then
# `stv eval --vectors $OUT/vizwiz.safetensors` (examples/lib.sh holds the pipeline and
# lists every variable). Idefics2 by default; Qwen-VL (runs its hub code, so the
# stages get --trust-remote-code):
#
#     bash examples/vizwiz.sh              # Idefics2 -> out/idefics2/vizwiz.safetensors
#     MODEL=qwen-vl bash examples/vizwiz.sh # Qwen-VL -> out/qwen-vl/vizwiz.safetensors
#
# Local data instead of the hub: a JSONL of {question_id, image, question, answers}
# (docs/data.md); EVAL_LIMIT holds out that many items, the rest is the support pool:
#
#     DATA=/data/vizwiz/val.jsonl EVAL_LIMIT=1000 bash examples/vizwiz.sh
set -euo pipefail

TASK=vizwiz
DATA=${DATA-lmms-lab/VizWiz-VQA}   # hub: a seeded split of val (no train split in the preset)
SHOTS=${SHOTS-16}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stv_pipeline
