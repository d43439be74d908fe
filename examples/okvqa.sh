#!/usr/bin/env bash
# OK-VQA: open VQA that needs outside knowledge (COCO-2014 images); VQA accuracy.
#
# The paper's settings: 4 shots, K = 300 heads, M = 32 clusters, 300 x 32 search,
# 100 scan queries; scan -> bank -> search -> eval -> report, then
# `stv eval --vectors $OUT/okvqa.safetensors` (examples/lib.sh holds the pipeline and
# lists every variable). Idefics2 by default; Qwen-VL (runs its hub code, so the
# stages get --trust-remote-code):
#
#     bash examples/okvqa.sh              # Idefics2 -> out/idefics2/okvqa.safetensors
#     MODEL=qwen-vl bash examples/okvqa.sh # Qwen-VL -> out/qwen-vl/okvqa.safetensors
#
# Local data: a support JSONL and an evaluation JSONL of {question_id, image, question,
# answers} (docs/data.md):
#
#     DATA=/data/okvqa/train.jsonl EVAL_DATA=/data/okvqa/val.jsonl bash examples/okvqa.sh
set -euo pipefail

TASK=okvqa
DATA=${DATA-lmms-lab/OK-VQA}        # hub: a seeded split of val2014
SHOTS=${SHOTS-4}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stv_pipeline
