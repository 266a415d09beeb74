#!/usr/bin/env bash
# Run a benchmark spec in the project's container image, or natively when no Docker engine answers.
# Usage: scripts/bench.sh cpu|gpu SPEC [MNISTBENCH-RUN-ARGS...]
# Environment:
#   DOCKER=auto|yes|no     auto (default): the container when `docker info` answers; yes: only the container; no: only native
#   VENV=.venv             the virtualenv of the native run
#   INSTALL=cmd            run before a native run to install the venv (the Makefile passes `make install`)
#   MNISTBENCH_DATA_DIR    the MNIST folder mounted into the container (default: the user cache, as natively)
set -euo pipefail

usage="usage: scripts/bench.sh cpu|gpu SPEC [ARGS...]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
target=$1 spec=$2
shift 2
extra=("$@") # bash 3.2 (macOS) treats an empty array as unset under set -u, hence ${extra[@]+...} below
case $target in cpu | gpu) ;; *) echo "$usage" >&2; exit 2 ;; esac
mode=${DOCKER:-auto}
case $mode in auto | yes | no) ;; *) echo "mnistbench: error: DOCKER must be auto, yes or no, not '$mode'" >&2; exit 2 ;; esac
[ -f "$spec" ] || { echo "mnistbench: error: no spec file $spec" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
spec_abs=$(cd "$(dirname "$spec")" && pwd)/$(basename "$spec")
venv=${VENV:-.venv}
case $venv in /*) ;; *) venv=$PWD/$venv ;; esac
cd "$root" # results/ is relative to the working folder, natively and in the image
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' mnistbench/__init__.py)
workdir=/mnistbench # the images' WORKDIR
data_in_image=/data/mnist

install_venv() { if [ -n "${INSTALL:-}" ]; then $INSTALL; fi; }

native() {
  exec "$venv/bin/mnistbench" run "${spec_abs#"$root"/}" ${extra[@]+"${extra[@]}"}
}

# The commit the image is built from, marked +dirty like mnistbench/environment.py does.
git_commit() {
  local commit
  commit=$(git rev-parse --short=12 HEAD 2>/dev/null) || { echo unknown; return; }
  if [ -n "$(git status --porcelain --untracked-files=no -- mnistbench pyproject.toml 2>/dev/null)" ]; then
    commit+=+dirty
  fi
  echo "$commit"
}

in_container() { # in_container FLAVOUR [docker run flags...]
  local flavour=$1
  shift
  local image=mnistbench-$flavour:$version
  docker build -f "docker/$flavour.Dockerfile" -t "$image" --build-arg "GIT_COMMIT=$(git_commit)" .
  local image_id
  image_id=$(docker image inspect --format '{{.Id}}' "$image")

  local data=${MNISTBENCH_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mnistbench/mnist}
  mkdir -p "$data" results
  data=$(cd "$data" && pwd)
  local mounts=(-v "$root/results:$workdir/results" -v "$root/bench:$workdir/bench:ro" -v "$data:$data_in_image")
  local rel=${spec_abs#"$root"/}
  if [ "${rel#bench/}" = "$rel" ]; then # a spec outside bench/: mount the file itself
    rel=specs/$(basename "$spec_abs")
    mounts+=(-v "$spec_abs:$workdir/$rel:ro")
  fi
  local tty=()
  if [ -t 1 ]; then tty=(-t); fi

  echo "mnistbench: running $rel in $image" >&2
  exec docker run --rm --init ${tty[@]+"${tty[@]}"} "$@" \
    --user "$(id -u):$(id -g)" \
    -e "MNISTBENCH_IMAGE=$image" -e "MNISTBENCH_IMAGE_ID=$image_id" \
    -e "MNISTBENCH_DATA_DIR=$data_in_image" \
    "${mounts[@]}" \
    "$image" run "$rel" ${extra[@]+"${extra[@]}"}
}

info=
engine=no
if [ "$mode" != no ] && info=$(docker info 2>/dev/null); then engine=yes; fi
if [ "$mode" = yes ] && [ $engine = no ]; then
  echo "mnistbench: error: DOCKER=yes, but no Docker engine answers (docker info failed)" >&2
  exit 2
fi

if [ "$target" = cpu ]; then
  if [ $engine = yes ]; then in_container cpu; fi
  [ "$mode" = no ] || echo "mnistbench: no Docker engine answers (docker info failed); running natively" >&2
  install_venv
  native
fi

# gpu: the CUDA image where the engine can reach a GPU, else the host's PyTorch if it sees one.
if [ $engine = yes ] && { [ "$mode" = yes ] || grep -qiE '^[[:space:]]*Runtimes:.*nvidia' <<<"$info"; }; then
  in_container cuda --gpus all
fi
install_venv
if "$venv/bin/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  [ "$mode" = no ] || echo "mnistbench: no Docker engine with the NVIDIA runtime answers; running natively on the host's GPU" >&2
  native
fi
echo "mnistbench: error: make bench-gpu needs a Docker engine with the NVIDIA runtime or a CUDA GPU that the host's PyTorch sees, and found neither (use make bench-cpu)" >&2
exit 2
