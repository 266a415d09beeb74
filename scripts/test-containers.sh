#!/usr/bin/env bash
# make test-containers: a real engine builds both images, runs bench/smoke.yaml in the CPU image through
# `make bench-cpu`, and the per-epoch metrics must equal a native run's (docs/containers.md, "The container test").
# Made for CI on a Debian-like machine with no engine: as root it installs podman from the distribution's
# packages, and when the base image cannot be pulled it builds a stand-in from Debian's packages.
# Environment: VENV (.venv, the native run's), MNISTBENCH_DATA_DIR (the MNIST files), ENGINE (docker|podman).
# Leaves logs in build/test-containers/; every failure is one line starting "test-containers: FAILED:".
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/engine.sh
. scripts/engine.sh
venv=${VENV:-.venv}
logs=build/test-containers
mkdir -p "$logs"
t0=$SECONDS

say() { printf 'test-containers [%4ds] %s\n' $((SECONDS - t0)) "$*" >&2; }
fail() { printf 'test-containers: FAILED: %s\n' "$*" >&2; exit 1; }
gb() { awk -v b="$1" 'BEGIN { printf "%.2f GB", b / 1e9 }'; }

apt_updated=no
apt_install() {
  local log=$logs/apt.log
  [ "$(id -u)" -eq 0 ] || fail "installing $* needs root (apt-get), and this is uid $(id -u)"
  command -v apt-get >/dev/null 2>&1 || fail "installing $* needs apt-get (a Debian-like machine)"
  if [ $apt_updated = no ]; then # a failing third-party source need not stop the install
    apt-get update >"$log" 2>&1 </dev/null || say "apt-get update: $(last_lines "$log" 1 '^[EW]:'); installing anyway"
    apt_updated=yes
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$log" 2>&1 </dev/null ||
    fail "apt-get install $* failed: $(last_lines "$log" 3); full log: $log"
}

# Podman as root in an unprivileged VM (no systemd, hybrid cgroups, no CAP_SYS_RESOURCE).
configure_podman() {
  local conf=/etc/containers/containers.conf.d/50-mnistbench-vm.conf
  [ "$(id -u)" -eq 0 ] || return 0
  mkdir -p "$(dirname "$conf")"
  cat >"$conf" <<'EOF'
# Written by mnistbench's scripts/test-containers.sh: podman as root in an unprivileged VM.
[containers]
# root there lacks CAP_SYS_RESOURCE, so no limit may exceed the VM's own
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
# crun refuses hybrid cgroups; runc does not
runtime = "runc"
# no systemd to manage cgroups or to keep a journal
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  say "podman configured for an unprivileged VM: $conf"
}

# ---------------------------------------------------------------- 1. an engine
[ -x "$venv/bin/mnistbench" ] || fail "no native install in $venv (run make install)"
if engine_find; then
  say "engine: $ENGINE ($engine_kind), $("$ENGINE" --version)"
  # A CI machine may keep the podman an earlier run installed: give it the same settings.
  if [ "$engine_kind" = podman ] && [ -n "${CI:-}" ]; then configure_podman; fi
else
  say "no engine answers ($(engine_tried)); installing podman, runc and catatonit from the distribution's packages"
  apt_install podman runc catatonit
  configure_podman
  ENGINE=podman
  engine_find || fail "podman was installed but \`podman info\` fails: $(podman info 2>&1 | tail -n 1)"
  say "engine: podman, $(podman --version)"
fi

# ---------------------------------------------------------------- 2. the base image, or a stand-in
flags=()
base=$(sed -n 's/^ARG BASE_IMAGE=//p' docker/cpu.Dockerfile)
standin=localhost/mnistbench-standin-python:bookworm
if image_exists "$base"; then
  say "base image $base: present"
elif timeout 180 "$ENGINE" pull "$base" >"$logs/pull.log" 2>&1; then
  say "base image $base: pulled"
else
  say "base image $base cannot be pulled ($(last_lines "$logs/pull.log" 1))"
  if image_exists "$standin"; then
    say "stand-in base $standin: present"
  else
    say "building the stand-in $standin: Debian bookworm with python3 from Debian's packages (mmdebstrap)"
    command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
    tar=$logs/standin.tar
    # The host's own Debian bookworm sources when it has them (its mirror is the one it can reach),
    # else mmdebstrap's default, deb.debian.org.
    sources=()
    if grep -qs '^[^#]*bookworm' /etc/apt/sources.list.d/debian.sources; then sources=(/etc/apt/sources.list.d/debian.sources); fi
    mmdebstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$tar" ${sources[@]+"${sources[@]}"} >"$logs/standin.log" 2>&1 </dev/null ||
      fail "mmdebstrap failed: $(last_lines "$logs/standin.log" 3); full log: $logs/standin.log"
    "$ENGINE" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tar" "$standin" >>"$logs/standin.log" 2>&1 ||
      fail "$ENGINE import failed: $(last_lines "$logs/standin.log" 3)"
    rm -f "$tar"
  fi
  flags+=(--build-arg "BASE_IMAGE=$standin")
fi

# ---------------------------------------------------------------- 3. the host's pip settings, for the builds
# pip_value KEY: what the host's pip uses for KEY: its environment (PIP_...) first, else its configuration.
pip_value() {
  local lines
  lines=$("$venv/bin/python" -m pip config list 2>/dev/null | grep -E "^[^=]*\.$1=" || true)
  { grep '^:env:' <<<"$lines" || grep -v '^:env:' <<<"$lines" || true; } | tail -n 1 | sed -E "s/^[^=]*=//; s/^'(.*)'$/\1/"
}
# usable URL: sets $usable to the URL when the build can read it, else to nothing. A file:// index is a
# host folder: podman mounts its parent (where the index's relative links lead) into the build at the
# same path; docker build cannot mount anything.
usable() {
  usable=$1
  case $1 in file://*)
    if [ "$engine_kind" = podman ]; then
      local dir
      dir=$(dirname "${1#file://}")
      flags+=(--volume "$dir:$dir:ro")
    else
      say "host pip index $1 is a host folder, which docker build cannot mount: left out"
      usable=
    fi
    ;;
  esac
}
index=$(pip_value index-url)
if [ -n "$index" ]; then
  usable "$index"
  index=$usable
  if [ -n "$index" ]; then flags+=(--build-arg "INDEX_URL=$index"); fi
fi
extra=
for url in $(pip_value extra-index-url); do
  usable "$url"
  if [ -n "$usable" ]; then extra+=${extra:+,}$usable; fi
done
if [ -n "$extra" ]; then flags+=(--build-arg "EXTRA_INDEX_URLS=$extra"); fi
cert=$(pip_value cert)
if [ -z "$cert" ]; then # pip's default: the system's bundle (truststore) or certifi's
  cert=$("$venv/bin/python" -c 'import ssl; p = ssl.get_default_verify_paths(); print(p.cafile or p.openssl_cafile or "")')
fi
if [ -n "$cert" ] && [ -f "$cert" ]; then flags+=(--secret "id=ca_bundle,src=$cert"); fi
# torch from the same index as the native install, so that the two runs can agree bit for bit.
flags+=(--build-arg TORCH_INDEX_URL=)
say "host pip: index ${index:-PyPI, the default}${extra:+, extra $extra}, CA bundle ${cert:-from certifi}; its find-links and constraint settings are not passed (the pins are constraints.txt)"
BUILD_FLAGS="${flags[*]}"
export ENGINE BUILD_FLAGS
say "BUILD_FLAGS=$BUILD_FLAGS"

# ---------------------------------------------------------------- 4. the images
start=$SECONDS
cpu=$(make --no-print-directory -s image-cpu 2>"$logs/image-cpu.err") ||
  fail "make image-cpu: $(last_lines "$logs/image-cpu.err" 1)"
cpu_build=$((SECONDS - start))
say "built $cpu in ${cpu_build} s"
start=$SECONDS
cuda=$(make --no-print-directory -s image-gpu 2>"$logs/image-gpu.err") ||
  fail "make image-gpu: $(last_lines "$logs/image-gpu.err" 1)"
cuda_build=$((SECONDS - start))
say "built $cuda in ${cuda_build} s"

# ---------------------------------------------------------------- 5. bench/smoke.yaml, in the image and natively
run_smoke() { # run_smoke NAME DOCKER-MODE: bench/smoke.yaml named NAME, through make bench-cpu
  local name=$1 mode=$2 spec=$logs/$1.yaml status=0
  sed "s/^name: .*/name: $name/" bench/smoke.yaml >"$spec"
  rm -rf "results/$name"
  local start=$SECONDS
  DOCKER=$mode make --no-print-directory -s bench-cpu SPEC="$spec" ARGS=--force >"$logs/$name.log" 2>&1 || status=$?
  sed 's/^/    /' "$logs/$name.log" >&2
  [ $status -eq 0 ] || fail "make bench-cpu DOCKER=$mode exited $status: $(last_lines "$logs/$name.log" 1)"
  say "$name: $((SECONDS - start)) s"
}
engine_run=ci-containers-engine native_run=ci-containers-native
run_smoke $engine_run yes
if grep -q 'mnistbench: building' "$logs/$engine_run.log"; then fail "make bench-cpu rebuilt $cpu instead of reusing it"; fi
grep -q "running .* in $cpu " "$logs/$engine_run.log" || fail "make bench-cpu did not run in $cpu"
run_smoke $native_run no

# ---------------------------------------------------------------- 6. same metrics, same versions, files of the caller
"$venv/bin/python" - "results/$native_run" "results/$engine_run" "$cpu" "$(image_id "$cpu")" <<'EOF' || fail "the container run differs from the native run (above)"
import json, sys
from pathlib import Path

native, engine, image, image_id = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
def runs(folder):
    return {p.name: json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))}
def metrics(record):  # per epoch, everything but the timings
    return [{k: v for k, v in e.items() if not (k.endswith("_seconds") or k.endswith("_per_s"))} for e in record["epochs"]]
a, b = runs(native), runs(engine)
problems = []
if not a or sorted(a) != sorted(b):
    problems.append(f"cells differ: native {sorted(a)}, container {sorted(b)}")
for cell in sorted(set(a) & set(b)):
    if metrics(a[cell]) != metrics(b[cell]):
        problems.append(f"{cell}: native {metrics(a[cell])} != container {metrics(b[cell])}")
    env_a, env_b = a[cell]["environment"], b[cell]["environment"]
    for key in ("torch", "constraints", "git_commit"):
        if env_a.get(key) != env_b.get(key):
            problems.append(f"{cell}: environment.{key}: native {env_a.get(key)!r}, container {env_b.get(key)!r}")
    if env_a.get("container") is not None or env_b.get("container") != {"image": image, "image_id": image_id}:
        problems.append(f"{cell}: environment.container: native {env_a.get('container')}, container {env_b.get('container')}")
for p in problems:
    print("test-containers:", p, file=sys.stderr)
if problems:
    sys.exit(1)
epochs = sum(len(r["epochs"]) for r in a.values())
env = next(iter(b.values()))["environment"]
print(f"test-containers: {len(a)} cells, {epochs} epochs: losses and accuracies bit-identical to the native run; "
      f"torch {env['torch']}, {env['constraints']}, container {env['container']['image']} {env['container']['image_id'][:19]}",
      file=sys.stderr)
EOF
for name in $engine_run $native_run; do
  stray=$(find "results/$name" \( ! -user "$(id -u)" -o ! -group "$(id -g)" \) -print | head -n 3)
  [ -z "$stray" ] || fail "results/$name has files that are not $(id -u):$(id -g)'s: $stray"
done
say "every result file belongs to the caller ($(id -un), $(id -u):$(id -g))"

# ---------------------------------------------------------------- 7. the CUDA image, as far as no GPU is needed
cuda_check=$("$ENGINE" run --rm --entrypoint python "$cuda" -c '
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, GPU seen: {torch.cuda.is_available()}")
' 2>"$logs/cuda-check.err") || fail "torch does not load in $cuda: $(last_lines "$logs/cuda-check.err" 2)"
say "$cuda: $cuda_check"
case $cuda_check in *"CUDA None"*) fail "$cuda has a torch without CUDA" ;; esac
say "not run here: make bench-gpu in $cuda needs an NVIDIA GPU (none in this test)"

# ---------------------------------------------------------------- 8. sizes, and tidying up
cpu_size=$("$ENGINE" image inspect --format '{{.Size}}' "$cpu")
cuda_size=$("$ENGINE" image inspect --format '{{.Size}}' "$cuda")
rm -rf "results/$engine_run" "results/$native_run"
say "sizes: $cpu $(gb "$cpu_size"), $cuda $(gb "$cuda_size") (BUILD_FLAGS as above)"
say "passed: built in ${cpu_build} s + ${cuda_build} s, total $((SECONDS - t0)) s with $ENGINE"
