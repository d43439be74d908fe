#!/usr/bin/env bash
# One node, several GPUs: every stage runs data parallel under torchrun, one process
# ("rank") per GPU (docs/scaling.md). scan and bank split their queries and contexts over
# the ranks (rank 0 merges the shards), search splits each iteration's S candidates, eval
# the evaluation items; report runs as one process. The results equal a one-process run's
# up to float effects of batching.
#
#     TASK=vizwiz bash examples/torchrun.sh                   # every visible GPU, Idefics2
#     TASK=cub MODEL=qwen-vl NPROC=4 bash examples/torchrun.sh
#
# TASK picks the benchmark (vizwiz okvqa flowers cub dtd, with their data and shots as in
# examples/<task>.sh; any other task needs DATA); every other variable is lib.sh's
# (paper's settings by default). With S = 32 samples, more than 32 ranks idle in the search.
#
#   NPROC     ranks on this node                [every visible GPU: torch.cuda.device_count()]
#   TORCHRUN  the launcher                                                         [torchrun]
set -euo pipefail

TASK=${TASK:-vizwiz}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NPROC=${NPROC:-$(python3 -c 'import torch; print(max(torch.cuda.device_count(), 1))' 2>/dev/null || echo 1)}
TORCHRUN=${TORCHRUN:-torchrun}

# Each stage: `torchrun --standalone --nproc_per_node N -m stvcli.cli STAGE ...` (torchrun
# sets OMP_NUM_THREADS=1 per rank; each rank computes on cuda:LOCAL_RANK).
stv_launch() {
    local -a launcher
    read -r -a launcher <<< "$TORCHRUN"
    stv_exec "${launcher[@]}" --standalone --nproc_per_node "$NPROC" -m stvcli.cli "$@"
}

stv_pipeline
