#!/usr/bin/env bash
# One GPU run of the whole chain at the paper's settings (issue 17; benchmarks/gpu.py says what).
#
#   bash benchmarks/gpu.sh                       # GPU machine: torch + transformers there, nothing else
#   bash benchmarks/gpu.sh --tiny --device cpu   # the CPU check (tests/test_gpu_script.py)
#
# No network: what stvcli needs and the machine lacks (pydantic, rich, faiss, ...) is
# installed from the wheelhouse $WHEELS (default benchmarks/wheels), filled beforehand on a
# machine with the registry (docs/benchmarks.md):
#   pip download -d benchmarks/wheels --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 pydantic rich pillow numpy safetensors
#   pip download -d benchmarks/wheels --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 faiss-gpu-cu12 faiss-cpu
# stvcli itself runs from this checkout (PYTHONPATH), not installed.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-$HERE/wheels}"

has() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }
install() {  # install(pip args...): from the wheelhouse only; one line when it cannot
  if [ ! -d "$WHEELS" ]; then
    echo "skip: installing $*: no wheelhouse at $WHEELS (see the pip download lines in benchmarks/gpu.sh)"
    return 1
  fi
  "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" "$@" >/tmp/stv-gpu-pip.log 2>&1 \
    || { echo "skip: installing $*: pip failed: $(tail -n 1 /tmp/stv-gpu-pip.log)"; return 1; }
}

missing=()
for pair in pydantic:pydantic rich:rich PIL:pillow numpy:numpy safetensors:safetensors; do
  has "${pair%%:*}" || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then install "${missing[@]}"; fi
if ! has faiss; then
  # faiss-gpu-cu12 without its nvidia-* dependencies (torch's CUDA libraries serve); faiss-cpu otherwise
  install --no-deps faiss-gpu-cu12 && has faiss || install --no-deps faiss-cpu
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec "$PYTHON" "$HERE/gpu.py" "$@"
