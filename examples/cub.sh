#!/usr/bin/env bash
# CUB-200-2011 birds as MTV's 2-way 1-shot episodes; accuracy.
#
# The paper's settings: 4 shots, K = 300 heads, M = 32 clusters, 300 x 32 search,
# 100 scan queries; scan -> bank -> search -> eval -> report, then
# `stv eval --vectors $OUT/cub.safetensors` (examples/lib.sh holds the pipeline and
# lists every variable). Idefics2 by default; Qwen-VL (runs its hub code, so the
# stages get --trust-remote-code):
#
#     bash examples/cub.sh              # Idefics2 -> out/idefics2/cub.safetensors
#     MODEL=qwen-vl bash examples/cub.sh # Qwen-VL -> out/qwen-vl/cub.safetensors
#
# Local data: MTV's episode files (a JSON list of {pos, neg, query, pos_label,
# neg_label}; image paths relative to IMAGE_ROOT), or an image folder by class:
#
#     DATA=MTV/data/cub/cub_train.json EVAL_DATA=MTV/data/cub/cub_test.json \
#         IMAGE_ROOT=/data bash examples/cub.sh
set -euo pipefail

TASK=cub
DATA=${DATA-bentrevett/caltech-ucsd-birds-200-2011}   # hub: train -> support, test -> evaluation
SHOTS=${SHOTS-4}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stv_pipeline
