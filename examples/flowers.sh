#!/usr/bin/env bash
# Oxford Flowers-102 as MTV's 2-way 1-shot episodes (options A/B, the query's own support
# pair in every prompt; a shot is one whole prior episode); accuracy.
#
# The paper's settings: 4 shots, K = 300 heads, M = 32 clusters, 300 x 32 search,
# 100 scan queries; scan -> bank -> search -> eval -> report, then
# `stv eval --vectors $OUT/flowers.safetensors` (examples/lib.sh holds the pipeline and
# lists every variable). Idefics2 by default; Qwen-VL (runs its hub code, so the
# stages get --trust-remote-code):
#
#     bash examples/flowers.sh              # Idefics2 -> out/idefics2/flowers.safetensors
#     MODEL=qwen-vl bash examples/flowers.sh # Qwen-VL -> out/qwen-vl/flowers.safetensors
#
# Local data: an image folder with one subfolder per class (folder/<class>/<image>), whose
# classes are split between support and evaluation episodes, or MTV's episode files:
#
#     DATA=/data/flowers102/jpg_by_class bash examples/flowers.sh
#     DATA=MTV/data/flower/flower_train.json EVAL_DATA=MTV/data/flower/flower_test.json \
#         IMAGE_ROOT=/data bash examples/flowers.sh
set -euo pipefail

TASK=flowers
DATA=${DATA-dpdl-benchmark/oxford_flowers102}   # hub: train -> support, test -> evaluation
SHOTS=${SHOTS-4}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stv_pipeline
