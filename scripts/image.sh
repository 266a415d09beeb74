#!/usr/bin/env bash
# Build the CPU or the CUDA image (make image-cpu / make image-gpu), tagged mnistbench-FLAVOUR:VERSION-HASH.
# Usage: scripts/image.sh cpu|gpu            build it with the engine and print its tag
#        scripts/image.sh cpu|gpu --tag      print the tag it would get, without an engine
# Environment: ENGINE, CONSTRAINTS, BUILD_FLAGS (scripts/engine.sh); docs/containers.md.
set -euo pipefail

usage="usage: scripts/image.sh cpu|gpu [--tag]"
if [ $# -lt 1 ] || [ $# -gt 2 ]; then echo "$usage" >&2; exit 2; fi
case $1 in cpu | gpu) ;; *) echo "$usage" >&2; exit 2 ;; esac
case ${2:---build} in --tag | --build) ;; *) echo "$usage" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
# shellcheck source=scripts/engine.sh
. scripts/engine.sh

flavour=$(flavour_of "$1")
tag=$(image_tag "$flavour") || exit 2
if [ "${2:-}" = --tag ]; then
  echo "$tag"
  exit 0
fi
if ! engine_find; then
  err "make image-$1 needs a container engine, and none answers ($(engine_tried))"
  exit 2
fi
image_build "$flavour" "$tag" || exit 1
echo "mnistbench: built $tag ($(image_id "$tag"))" >&2
echo "$tag"
