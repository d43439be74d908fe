#!/usr/bin/env bash
# Describable Textures (47 classes) as MTV's 2-way 1-shot episodes; accuracy.
#
# The paper's settings: 4 shots, K = 300 heads, M = 32 clusters, 300 x 32 search,
# 100 scan queries; scan -> bank -> search -> eval -> report, then
# `stv eval --vectors $OUT/dtd.safetensors` (examples/lib.sh holds the pipeline and
# lists every variable). Idefics2 by default; Qwen-VL (runs its hub code, so the
# stages get --trust-remote-code):
#
#     bash examples/dtd.sh              # Idefics2 -> out/idefics2/dtd.safetensors
#     MODEL=qwen-vl bash examples/dtd.sh # Qwen-VL -> out/qwen-vl/dtd.safetensors
#
# Local data: an image folder with split folders (dtd/train/<class>/..., dtd/test/<class>/...),
# or MTV's dtd/train.json + dtd/test.json episode files with IMAGE_ROOT:
#
#     DATA=/data/dtd:train EVAL_DATA=/data/dtd:test bash examples/dtd.sh
set -euo pipefail

TASK=dtd
DATA=${DATA-tanganke/dtd}   # hub: train -> support, test -> evaluation
SHOTS=${SHOTS-4}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stv_pipeline
