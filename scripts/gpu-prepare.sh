#!/usr/bin/env bash
# Before a loan of a GPU machine without network: gather what scripts/gpu-session.sh needs beside the checkout.
# .whl/ gets the wheels of the suite's dependencies that a stock PyTorch image lacks (pydantic, plotly, ...);
# .data/mnist/ gets the four MNIST IDX files from $MNISTBENCH_DATA_DIR (default ../shared/data/mnist). Both are
# ignored by git (.git/info/exclude) and small (about 30 MB together).
set -euo pipefail
SRC=${MNISTBENCH_DATA_DIR:-../shared/data/mnist}
PY=${PYTHON:-python3}
PYVER=${GPU_PYTHON_VERSION:-3.12}
for p in /.whl/ /.data/ /gpu-results/ /gpu-session-out/; do
    grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >>.git/info/exclude
done
mkdir -p .whl .data/mnist
cp "$SRC"/*-ubyte* .data/mnist/
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    pydantic pydantic-core annotated-types typing-inspection plotly
echo "gpu-prepare: $(ls .whl | wc -l) wheels in .whl/, $(ls .data/mnist | wc -l) data files in .data/mnist/"
