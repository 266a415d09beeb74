#!/usr/bin/env bash
# Every GPU check and benchmark of the suite in one command, sized for a short loan of a GPU machine (< 10 minutes
# on an H100/H200): the CUDA tests, the fixed-budget speedrun (bench/speedrun-gpu.yaml), the main comparison
# (bench/gpu.yaml), the step profile and peaks, and inference on CUDA (bench/infer-gpu.yaml). Each step has its own
# time limit, so a slow step costs its limit, not the loan. Everything lands in one archive under $OUT
# (default ./gpu-session-out): results/ with run files and environments, the log, nvidia-smi's view.
#
# The machine needs Python with PyTorch (CUDA) and the suite's dependencies. Where it has no network, run
# scripts/gpu-prepare.sh first on a machine that has one: it puts the missing wheels in .whl/ and the MNIST
# files in .data/mnist/, which travel with the checkout. Then, on the GPU machine, from the repository root:
#     scripts/gpu-session.sh
# Unpack $OUT/gpu-session.tar.gz into the checkout and commit reference/<spec>/ folders you promote
# (`mnistbench promote`). docs/performance.md (GPU) says what each step measures.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-session-out}
mkdir -p "$OUT"
LOG="$OUT/session.log"
RES=${RES:-$PWD/gpu-results}
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mnistbench-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/mnistbench-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA=${MNISTBENCH_DATA_DIR:-$PWD/.data/mnist}
export MNISTBENCH_DATA_DIR="$DATA"

step() {  # step NAME SECONDS CMD...: run CMD under a time limit, log its output, never stop the session
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$LOG"
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
}
archive() { tar czf "$OUT/gpu-session.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")" 2>/dev/null; }
trap archive EXIT

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu-session: PyTorch sees no CUDA device here; nothing measured" | tee -a "$LOG"; exit 3; }
test -d "$DATA" || { echo "gpu-session: no MNIST at $DATA (run scripts/gpu-prepare.sh)" | tee -a "$LOG"; exit 2; }
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
mkdir -p "$RES"
RUN=("$PY" -m mnistbench run --results-dir "$RES" --data-dir "$DATA" --no-download --no-reference)
step env 30 "$PY" -m mnistbench env --json
step cuda-tests 90 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_stepprofile.py tests/test_engine.py tests/test_environment.py
step speedrun 120 "${RUN[@]}" bench/speedrun-gpu.yaml
step profile-step 45 "$PY" -m mnistbench profile-step lenet5 --device cuda --batch-size 256 --out "$RES/profile-step"
step bench-gpu 200 "${RUN[@]}" bench/gpu.yaml
step infer 100 "$PY" -m mnistbench infer "$RES/gpu" --spec bench/infer-gpu.yaml --data-dir "$DATA" --timing-seeds 1
archive
echo "gpu-session: done in $SECONDS s; archive $OUT/gpu-session.tar.gz" | tee -a "$LOG"
