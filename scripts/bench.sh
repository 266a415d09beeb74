#!/usr/bin/env bash
# Run a benchmark spec in the project's container image, or natively when no container engine answers.
# Usage: scripts/bench.sh cpu|gpu SPEC [MNISTBENCH-RUN-ARGS...]
# Environment:
#   DOCKER=auto|yes|no     auto (default): a container when an engine answers; yes: only a container; no: only native
#   ENGINE, CONSTRAINTS, BUILD_FLAGS, RUN_FLAGS, CDI_SPEC_DIRS   the engine and the images (scripts/engine.sh)
#   VENV=.venv             the virtualenv of the native run
#   INSTALL=cmd            run before a native run to install the venv (the Makefile passes `make install`)
#   MNISTBENCH_DATA_DIR    the MNIST folder mounted into the container (default: the user cache, as natively)
#   MNISTBENCH_INVOKED_AS  the make command that ran this (the Makefile sets it), for mnistbench's resume hint
#   MNISTBENCH_MALLOC=libc|tcmalloc|jemalloc|auto   a native run's memory allocator: libc (default) the C library's,
#                          the others preloaded (auto: tcmalloc where installed) (docs/performance.md, "The memory allocator")
# The image is built only when no image has the tag of what goes into it (scripts/image.sh, make image-cpu).
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
# Set by the Makefile ("make bench-cpu"): mnistbench's resume hint then names the make command, with the spec as given.
invoked=()
if [ -n "${MNISTBENCH_INVOKED_AS:-}" ]; then
  export MNISTBENCH_INVOKED_AS="$MNISTBENCH_INVOKED_AS SPEC=$(printf %q "$spec")"
  invoked=(-e "MNISTBENCH_INVOKED_AS=$MNISTBENCH_INVOKED_AS")
fi

root=$(cd "$(dirname "$0")/.." && pwd)
spec_abs=$(cd "$(dirname "$spec")" && pwd)/$(basename "$spec")
venv=${VENV:-.venv}
case $venv in /*) ;; *) venv=$PWD/$venv ;; esac
cd "$root" # results/ and reference/ are relative to the working folder, natively and in the image
# shellcheck source=scripts/engine.sh
. scripts/engine.sh
workdir=/mnistbench # the images' WORKDIR
data_in_image=/data/mnist

install_venv() { if [ -n "${INSTALL:-}" ]; then $INSTALL; fi; }

# The allocator a native run preloads when asked: the same results, about 3% faster, up to 5% more memory
# (docs/performance.md, "The memory allocator"). Found through the linker's cache, as the dynamic loader finds
# libraries; each run records the allocator it had.
preload_malloc() {
  local want=${MNISTBENCH_MALLOC:-libc} pattern lib ldconfig
  case $want in
    libc) return 0 ;;
    auto | tcmalloc) pattern='libtcmalloc(_minimal)?[.]so[.][0-9]+' ;;
    jemalloc) pattern='libjemalloc[.]so[.][0-9]+' ;;
    *) echo "mnistbench: error: MNISTBENCH_MALLOC must be libc, tcmalloc, jemalloc or auto, not '$want'" >&2; exit 2 ;;
  esac
  case ${LD_PRELOAD:-} in *tcmalloc* | *jemalloc* | *mimalloc*) return 0 ;; esac # the caller chose one already
  ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
  lib=$("$ldconfig" -p 2>/dev/null | awk -v re="^${pattern}\$" '$1 ~ re { print $NF; exit }') || true
  if [ -z "$lib" ] || [ ! -f "$lib" ]; then
    [ "$want" = auto ] && return 0
    echo "mnistbench: error: MNISTBENCH_MALLOC=$want, but the linker's cache has no lib$want (on Debian or Ubuntu: apt-get install libtcmalloc-minimal4 or libjemalloc2)" >&2
    exit 2
  fi
  export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
}

native() {
  preload_malloc
  exec "$venv/bin/mnistbench" run "${spec_abs#"$root"/}" ${extra[@]+"${extra[@]}"}
}

# The checkout's commit (+dirty as the run record marks it), for the container, which has no .git: asked of
# mnistbench/environment.py itself, which needs only the standard library, so there is one definition.
git_commit() {
  "${PYTHON:-python3}" -c 'import sys; sys.path.insert(0, sys.argv[1]); from mnistbench.environment import git_commit; print(git_commit() or "unknown")' "$root" 2>/dev/null || echo unknown
}

in_container() { # in_container FLAVOUR [run flags...]
  local flavour=$1 image image_id
  shift
  image=$(image_tag "$flavour") || exit 2
  if ! image_exists "$image"; then
    image_build "$flavour" "$image" || exit 1
  fi
  image_id=$(image_id "$image")

  local data=${MNISTBENCH_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mnistbench/mnist}
  mkdir -p "$data" results # before the engine could create them as root
  data=$(cd "$data" && pwd)
  local mounts=(-v "$root/results:$workdir/results" -v "$root/bench:$workdir/bench:ro" -v "$data:$data_in_image")
  # The shipped results, read-only: each run ends compared with reference/<spec name> (vs_reference.md).
  if [ -d "$root/reference" ]; then mounts+=(-v "$root/reference:$workdir/reference:ro"); fi
  local rel=${spec_abs#"$root"/}
  if [ "${rel#bench/}" = "$rel" ]; then # a spec outside bench/: mount the file itself
    rel=specs/$(basename "$spec_abs")
    mounts+=(-v "$spec_abs:$workdir/$rel:ro")
  fi
  local tty=() user=() run_flags=()
  if [ -t 1 ]; then tty=(-t); fi
  read -r -a user <<<"$(engine_user_flags)"
  read -r -a run_flags <<<"${RUN_FLAGS:-}" # split at spaces

  echo "mnistbench: running $rel in $image ($ENGINE)" >&2
  exec "$ENGINE" run --rm --init ${tty[@]+"${tty[@]}"} "$@" ${run_flags[@]+"${run_flags[@]}"} \
    "${user[@]}" \
    -e "MNISTBENCH_IMAGE=$image" -e "MNISTBENCH_IMAGE_ID=$image_id" -e "MNISTBENCH_GIT_COMMIT=$(git_commit)" \
    -e "MNISTBENCH_DATA_DIR=$data_in_image" ${invoked[@]+"${invoked[@]}"} \
    "${mounts[@]}" \
    "$image" run "$rel" ${extra[@]+"${extra[@]}"}
}

engine=no
if [ "$mode" != no ] && engine_find; then engine=yes; fi
if [ "$mode" = yes ] && [ $engine = no ]; then
  echo "mnistbench: error: DOCKER=yes, but no container engine answers ($(engine_tried))" >&2
  exit 2
fi

if [ "$target" = cpu ]; then
  if [ $engine = yes ]; then in_container cpu; fi
  [ "$mode" = no ] || echo "mnistbench: no container engine answers ($(engine_tried)); running natively" >&2
  install_venv
  native
fi

# gpu: the CUDA image where the engine can reach a GPU, else the host's PyTorch if it sees one.
if [ $engine = yes ] && { [ "$mode" = yes ] || engine_gpu_ready; }; then
  read -r -a gpu <<<"$(engine_gpu_flags)"
  in_container cuda "${gpu[@]}"
fi
install_venv
if "$venv/bin/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  [ "$mode" = no ] || echo "mnistbench: no container engine with GPU access answers; running natively on the host's GPU" >&2
  native
fi
echo "mnistbench: error: make bench-gpu needs a container engine with GPU access (Docker with the NVIDIA runtime, or podman with an NVIDIA CDI spec) or a CUDA GPU that the host's PyTorch sees, and found neither (use make bench-cpu)" >&2
exit 2
