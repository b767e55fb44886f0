#!/usr/bin/env bash
# Build the agent's container image from wheels made here (pip wheel), with no download during
# `docker build`:   packaging/build-image.sh [TAG=edgetwin:<version>] [BASE=python:3.11-slim-bookworm]
# WHEELS=DIR reuses a folder of wheels (e.g. a bundle's, from packaging/bundle.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
version="$("$python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$root/pyproject.toml")"
tag="${1:-edgetwin:$version}"
base="${2:-python:3.11-slim-bookworm}"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/wheels"
if [ -n "${WHEELS:-}" ]; then
  cp "$WHEELS"/*.whl "$ctx/wheels/"
else
  "$python" -m pip wheel --quiet --wheel-dir "$ctx/wheels" "$root[opcua,iec104,dnp3,dlms]"
fi
docker build --quiet --file "$root/packaging/Dockerfile" --build-arg "BASE=$base" --tag "$tag" "$ctx"
echo "$tag"
