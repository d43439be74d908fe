# examples/lib.sh: the pipeline every example script shares. Source it, do not run it:
#
#     TASK=vizwiz
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#     stv_pipeline
#
# stv_pipeline runs scan -> bank -> search -> eval -> report in $WORKSPACE, copies the
# vectors to $OUT/<task>.safetensors and evaluates them from that file alone
# (`stv eval --vectors`, as on another machine), writing $OUT/<task>/results.json
# (NAME replaces <task> in these paths when set).
# Every stage reuses a valid artifact from an earlier run, and the search resumes from
# its checkpoint, so rerunning a script after a crash redoes only what is missing.
#
# Settings are environment variables; the defaults are the paper's (docs/method.md §8.1).
# A variable set to the empty string leaves its flag out (the stage's own default).
#
#   MODEL           idefics2 | qwen-vl | any short name, hub id or local dir   [idefics2]
#   TASK            set by the calling script: vizwiz okvqa flowers cub dtd text ...
#   DATA            support data: hub id[:split], .jsonl, image folder, episode .json
#                   (docs/data.md)                                  [the task's hub data]
#   EVAL_DATA       separate evaluation data                [none: a seeded split of DATA]
#   IMAGE_ROOT      image root for MTV episode files                              [none]
#   SHOTS           demonstrations per many-shot prompt     [the task's: 16 VizWiz, 4 else]
#   QUERIES         support queries scanned, Nq                                    [100]
#   TOP_K           heads kept, K (empty: 300/1024 of the model's heads)           [300]
#   CLUSTERS        k-means clusters per head, M                                    [32]
#   CONTEXTS        many-shot contexts clustered, T                       [8 x CLUSTERS]
#   ITERATIONS      REINFORCE iterations                                           [300]
#   SAMPLES         samples per iteration, S                                        [32]
#   QUERIES_PER_ITERATION  support queries per candidate's reward                    [4]
#   METHODS         methods `stv eval -w` compares             [zero-shot,icl:4,mtv,stv]
#   VECTOR_METHODS  methods `stv eval --vectors` runs                   [zero-shot,stv]
#   MTV_ITERATIONS  MTV's REINFORCE iterations                                     [600]
#   EVAL_LIMIT      evaluation items held out (seeded sample)    [all; half of one source]
#   SUPPORT_LIMIT   support items used                                             [all]
#   LIMIT           evaluate only the first N evaluation items                     [all]
#   SEED                                                                             [0]
#   DEVICE, DTYPE, BATCH_SIZE   passed to the stages                     [stage defaults]
#   TRUST_REMOTE_CODE  1: --trust-remote-code                    [1 for qwen-vl, else 0]
#   NAME            names the outputs: $OUT/$NAME.safetensors, $OUT/$NAME/      [TASK]
#   WORKSPACE       the stage artifacts                           [runs/<name>-<model>]
#   OUT             final vectors and their results                       [out/<model>]
#   SCAN_ARGS, BANK_ARGS, SEARCH_ARGS, EVAL_ARGS  extra flags (split on spaces)
#   STV             the stv command                                                [stv]
#   QUIET           1: no progress bars (batch jobs)                                 [0]
#   DRY_RUN         1: print the commands, run nothing                               [0]
#
# torchrun.sh and slurm.sh redefine stv_launch to start the stages under torchrun.

set -euo pipefail

STV_EXAMPLES=${STV_EXAMPLES:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

# The built-in benchmarks' data and shots (`stv tasks`; docs/data.md). A script that sets
# DATA or SHOTS itself wins; other tasks (vqa, episode, text, ...) need DATA.
stv_task_defaults() {
    case "$TASK" in
        vizwiz)  DATA=${DATA-lmms-lab/VizWiz-VQA};                    SHOTS=${SHOTS-16} ;;
        okvqa)   DATA=${DATA-lmms-lab/OK-VQA};                        SHOTS=${SHOTS-4} ;;
        flowers) DATA=${DATA-dpdl-benchmark/oxford_flowers102};       SHOTS=${SHOTS-4} ;;
        cub)     DATA=${DATA-bentrevett/caltech-ucsd-birds-200-2011}; SHOTS=${SHOTS-4} ;;
        dtd)     DATA=${DATA-tanganke/dtd};                           SHOTS=${SHOTS-4} ;;
        *)       DATA=${DATA-};                                       SHOTS=${SHOTS-} ;;
    esac
}

: "${TASK:?set TASK (vizwiz, okvqa, flowers, cub, dtd, text, ...) before sourcing lib.sh}"
stv_task_defaults

MODEL=${MODEL-idefics2}
EVAL_DATA=${EVAL_DATA-}
IMAGE_ROOT=${IMAGE_ROOT-}
QUERIES=${QUERIES-100}
TOP_K=${TOP_K-300}
CLUSTERS=${CLUSTERS-32}
CONTEXTS=${CONTEXTS-}
ITERATIONS=${ITERATIONS-300}
SAMPLES=${SAMPLES-32}
QUERIES_PER_ITERATION=${QUERIES_PER_ITERATION-4}
METHODS=${METHODS-zero-shot,icl:4,mtv,stv}
VECTOR_METHODS=${VECTOR_METHODS-zero-shot,stv}
MTV_ITERATIONS=${MTV_ITERATIONS-600}
EVAL_LIMIT=${EVAL_LIMIT-}
SUPPORT_LIMIT=${SUPPORT_LIMIT-}
LIMIT=${LIMIT-}
SEED=${SEED-0}
DEVICE=${DEVICE-}
DTYPE=${DTYPE-}
BATCH_SIZE=${BATCH_SIZE-}
STV=${STV:-stv}
QUIET=${QUIET:-0}
DRY_RUN=${DRY_RUN:-0}

# A short name for paths: the model's last path component ("idefics2", "Qwen-VL", ...).
MODEL_TAG=${MODEL_TAG:-$(basename "${MODEL%/}")}
NAME=${NAME:-$TASK}
WORKSPACE=${WORKSPACE:-runs/$NAME-$MODEL_TAG}
OUT=${OUT:-out/$MODEL_TAG}
VECTORS=$OUT/$NAME.safetensors

# Qwen-VL runs its own modelling code from the hub; the stages need the permission.
case "$MODEL" in
    qwen-vl | */Qwen-VL*) TRUST_REMOTE_CODE=${TRUST_REMOTE_CODE:-1} ;;
    *) TRUST_REMOTE_CODE=${TRUST_REMOTE_CODE:-0} ;;
esac

# ARGS helpers: _opt FLAG VALUE adds "FLAG VALUE" unless VALUE is empty; _flag FLAG ON
# adds FLAG when ON is 1; _extra "$X_ARGS" adds the words of X_ARGS.
_opt() { if [[ -n ${2:-} ]]; then ARGS+=("$1" "$2"); fi; }
_flag() { if [[ ${2:-0} == 1 ]]; then ARGS+=("$1"); fi; }
_extra() { local -a words; read -r -a words <<< "${1:-}"; ARGS+=("${words[@]}"); }

# stv_launch STAGE ARGS...: one stage as one process. torchrun.sh / slurm.sh redefine it.
stv_launch() {
    local -a stv
    read -r -a stv <<< "$STV"
    stv_exec "${stv[@]}" "$@"
}

# stv_show COMMAND...: print the command as a shell would read it.
stv_show() {
    local word line=+ plain='^[A-Za-z0-9_./:=,@%+-]+$'
    for word in "$@"; do
        if [[ $word =~ $plain ]]; then line+=" $word"; else line+=" $(printf %q "$word")"; fi
    done
    echo "$line"
}

# stv_exec COMMAND...: print the command, then run it (unless DRY_RUN=1).
stv_exec() {
    stv_show "$@"
    if [[ $DRY_RUN != 1 ]]; then "$@"; fi
}

stv_pipeline() {
    echo "== $TASK on $MODEL: workspace $WORKSPACE, vectors $VECTORS"

    # 1. scan ("where"): zero- vs many-shot activations of Nq support queries, top-K heads.
    ARGS=(--model "$MODEL" --task "$TASK" --workspace "$WORKSPACE" --queries "$QUERIES" --seed "$SEED")
    _opt --data "$DATA"; _opt --eval-data "$EVAL_DATA"; _opt --image-root "$IMAGE_ROOT"
    _opt --shots "$SHOTS"; _opt --top-k "$TOP_K"
    _opt --eval-limit "$EVAL_LIMIT"; _opt --support-limit "$SUPPORT_LIMIT"
    _opt --device "$DEVICE"; _opt --dtype "$DTYPE"; _opt --batch-size "$BATCH_SIZE"
    _flag --trust-remote-code "$TRUST_REMOTE_CODE"; _flag --quiet "$QUIET"; _extra "${SCAN_ARGS:-}"
    stv_launch scan "${ARGS[@]}"     # model, data and split are recorded: later stages reuse them

    # 2. bank ("what"): k-means of T many-shot activations per head into M clusters.
    ARGS=(--workspace "$WORKSPACE" --clusters "$CLUSTERS" --seed "$SEED")
    _opt --contexts "$CONTEXTS"; _opt --batch-size "$BATCH_SIZE"; _flag --quiet "$QUIET"; _extra "${BANK_ARGS:-}"
    stv_launch bank "${ARGS[@]}"

    # 3. search: REINFORCE picks one bank vector per head (ITERATIONS x SAMPLES candidates).
    ARGS=(--workspace "$WORKSPACE" --iterations "$ITERATIONS" --samples "$SAMPLES" --seed "$SEED")
    _opt --queries-per-iteration "$QUERIES_PER_ITERATION"; _opt --batch-size "$BATCH_SIZE"
    _flag --quiet "$QUIET"; _extra "${SEARCH_ARGS:-}"
    stv_launch search "${ARGS[@]}"

    # 4. eval: every method on the same held-out items -> $WORKSPACE/results.json.
    ARGS=(--workspace "$WORKSPACE" --methods "$METHODS" --mtv-iterations "$MTV_ITERATIONS" --seed "$SEED")
    _opt --limit "$LIMIT"; _opt --batch-size "$BATCH_SIZE"; _flag --quiet "$QUIET"; _extra "${EVAL_ARGS:-}"
    stv_launch eval "${ARGS[@]}"

    # 5. report: sensitivity heatmap, reward curve, search diagnostics, accuracy (PNGs).
    local -a stv
    read -r -a stv <<< "$STV"
    stv_exec "${stv[@]}" report --workspace "$WORKSPACE"

    # 6. The vectors file alone is enough: copy it out and evaluate from it.
    stv_exec mkdir -p "$OUT"
    stv_exec cp "$WORKSPACE/vectors.safetensors" "$VECTORS"
    ARGS=(--vectors "$VECTORS" --methods "$VECTOR_METHODS" --output-path "$OUT/$NAME" --seed "$SEED")
    _opt --limit "$LIMIT"; _opt --batch-size "$BATCH_SIZE"; _flag --quiet "$QUIET"; _extra "${EVAL_ARGS:-}"
    stv_launch eval "${ARGS[@]}"

    echo "== done: $VECTORS, $OUT/$NAME/results.json, $WORKSPACE/results.json and its PNGs"
}
