#!/usr/bin/env bash
# Task vectors on a text-only LLM: the same pipeline (examples/lib.sh) with `--task text`
# on one of the word-mapping tasks in examples/text-tasks/ (`x: y` lines: plural,
# past-tense, capital, french, ...; see its README): train.jsonl is the support pool
# (demonstrations, scan, bank, search), test.jsonl the evaluation items.
#
#     bash examples/text.sh                                   # plural on Gemma-3-270m
#     TEXT_TASK=capital MODEL=llama bash examples/text.sh     # Llama-3.2-1B
#
#   TEXT_TASK  a folder of examples/text-tasks                                    [plural]
#   MODEL      a text LLM: short name (`stv models`), hub id or local dir         [gemma3]
#   SHOTS      demonstrations per many-shot prompt                                    [16]
#   TOP_K      heads kept (empty: 300/1024 of the model's heads; Gemma-3-270m has
#              18 x 4 = 72, fewer than the paper's K = 300)                        [empty]
#   DATA, EVAL_DATA  override the task's train.jsonl / test.jsonl
# and lib.sh's other variables (M = 32, 300 x 32 search, ... by default). Results go
# to $OUT/text-<TEXT_TASK>.safetensors and $OUT/text-<TEXT_TASK>/results.json.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEXT_TASK=${TEXT_TASK:-plural}
TASK=text
MODEL=${MODEL:-gemma3}
DATA=${DATA-$HERE/text-tasks/$TEXT_TASK/train.jsonl}
EVAL_DATA=${EVAL_DATA-$HERE/text-tasks/$TEXT_TASK/test.jsonl}
SHOTS=${SHOTS-16}
TOP_K=${TOP_K-}
NAME=text-$TEXT_TASK          # -> runs/text-plural-gemma3, out/gemma3/text-plural.safetensors
source "$HERE/lib.sh"
stv_pipeline
