#!/usr/bin/env bash
#SBATCH --job-name=stv
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1        # one torchrun per node; it starts one rank per GPU
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=stv-%j.log
#
# Several nodes under Slurm: every stage runs as `srun torchrun` on all nodes of the job,
# the ranks meeting at a c10d rendezvous on the job's first node (docs/scaling.md). The
# WORKSPACE (rank 0 merges the scan and bank shards through it), the data and the model
# cache (HF_HOME) must be on a file system every node sees. Submit from the repository
# root (sbatch runs a copy of this file, so the examples are found from
# $SLURM_SUBMIT_DIR/examples; STV_EXAMPLES overrides it); sbatch passes your environment:
#
#     WORKSPACE=/shared/runs/vizwiz-idefics2 OUT=/shared/out/idefics2 sbatch examples/slurm.sh
#     TASK=okvqa MODEL=qwen-vl sbatch --nodes 4 examples/slurm.sh
#
# Outside Slurm (no SLURM_JOB_ID) the same script runs on this node alone, with the same
# rendezvous on 127.0.0.1: `bash examples/slurm.sh`.
#
#   TASK          vizwiz okvqa flowers cub dtd (others need DATA)                 [vizwiz]
#   NNODES        nodes                                    [$SLURM_JOB_NUM_NODES, else 1]
#   NPROC         ranks per node            [$SLURM_GPUS_ON_NODE, else every visible GPU]
#   RDZV_PORT     rendezvous port on the first node                                [29500]
#   MAX_RESTARTS  torchrun reruns of a failed group (finished shards are reused)       [0]
#   TORCHRUN      the launcher                                                  [torchrun]
# and lib.sh's variables (paper's settings by default).
set -euo pipefail

TASK=${TASK:-vizwiz}
if [[ -z ${STV_EXAMPLES:-} ]]; then
    STV_EXAMPLES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    if [[ ! -f $STV_EXAMPLES/lib.sh && -n ${SLURM_SUBMIT_DIR:-} ]]; then
        STV_EXAMPLES=$SLURM_SUBMIT_DIR/examples   # sbatch's spool copy: use the submit dir
    fi
fi
source "$STV_EXAMPLES/lib.sh"

NNODES=${NNODES:-${SLURM_JOB_NUM_NODES:-1}}
NPROC=${NPROC:-${SLURM_GPUS_ON_NODE:-$(python3 -c 'import torch; print(max(torch.cuda.device_count(), 1))' \
    2>/dev/null || echo 1)}}
RDZV_PORT=${RDZV_PORT:-29500}
MAX_RESTARTS=${MAX_RESTARTS:-0}
TORCHRUN=${TORCHRUN:-torchrun}

# The rendezvous host: the job's first node under Slurm, else this machine.
if [[ -z ${RDZV_HOST:-} && -n ${SLURM_JOB_ID:-} ]]; then
    mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    if [[ ${#nodes[@]} == 0 ]]; then
        echo "slurm.sh: cannot list the job's nodes ($SLURM_JOB_NODELIST) with scontrol; set RDZV_HOST" >&2
        exit 1
    fi
    RDZV_HOST=${nodes[0]}
fi
RDZV_HOST=${RDZV_HOST:-127.0.0.1}
# A restarted group must not read the dead attempt's addresses (pytorch/pytorch#135712).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
echo "== $NNODES node(s) x $NPROC rank(s), rendezvous $RDZV_HOST:$RDZV_PORT"

# Each stage: one torchrun per node (srun), its own rendezvous id, the same endpoint.
launches=0
stv_launch() {
    local stage=$1
    local -a launcher srun=()
    launches=$((launches + 1))
    read -r -a launcher <<< "$TORCHRUN"
    if [[ -n ${SLURM_JOB_ID:-} ]]; then
        srun=(srun --nodes "$NNODES" --ntasks-per-node 1 --kill-on-bad-exit=1)
    fi
    stv_exec "${srun[@]}" "${launcher[@]}" --nnodes "$NNODES" --nproc_per_node "$NPROC" \
        --rdzv-backend c10d --rdzv-endpoint "$RDZV_HOST:$RDZV_PORT" \
        --rdzv-id "stv-${SLURM_JOB_ID:-local}-$launches-$stage" --max-restarts "$MAX_RESTARTS" \
        -m stvcli.cli "$@"
}

stv_pipeline
