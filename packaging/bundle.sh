#!/usr/bin/env bash
# Build an air-gapped install bundle: every wheel the agent needs for one platform, plus the
# install script, the systemd unit, the example config and the docs, in one tarball.
#
#   packaging/bundle.sh x86_64|aarch64 [OUT_DIR]      (aarch64: Raspberry Pi 4/5, 64-bit OS)
#
# Runs on a build host that can reach a package index; the substation needs none:
#   tar xzf edgetwin-<version>-<arch>.tar.gz && sudo edgetwin-<version>-<arch>/install.sh --wheels edgetwin-<version>-<arch>/wheels
# Wheels are for CPython 3.11 (Debian bookworm, Raspberry Pi OS bookworm); PYTHON_VERSION=3.12
# targets 3.12.
set -euo pipefail
arch="${1:?usage: bundle.sh x86_64|aarch64 [OUT_DIR]}"
out="${2:-dist}"
pyver="${PYTHON_VERSION:-3.11}"
case "$arch" in x86_64|aarch64) ;; *) echo "bundle.sh: x86_64 or aarch64, not $arch" >&2; exit 2 ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
version="$("$python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$root/pyproject.toml")"
name="edgetwin-$version-$arch"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stage="$work/$name"
mkdir -p "$stage/wheels" "$out"

# the agent itself: a pure-Python wheel
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$stage/wheels" "$root"
# its dependencies, as binary wheels for the target platform only (no compiler on site)
platforms=()
for tag in manylinux2014 manylinux_2_17 manylinux_2_28 manylinux_2_31 manylinux_2_34 musllinux_1_1; do
  platforms+=(--platform "${tag}_${arch}")
done
# with every driver's extra (EXTRAS, default opcua,iec104,dnp3,dlms): a site enables a driver by config alone
wheel="$(ls "$stage"/wheels/edgetwin-*.whl)"
"$python" -m pip download --quiet --only-binary=:all: --implementation cp \
  --python-version "$pyver" "${platforms[@]}" --platform any \
  --dest "$stage/wheels" "edgetwin[${EXTRAS:-opcua,iec104,dnp3,dlms}] @ file://$wheel"

cp "$root/packaging/install.sh" "$root/packaging/edgetwin.example.toml" "$stage/"
mkdir -p "$stage/systemd" "$stage/docs"
cp "$root/packaging/systemd/edgetwin.service" "$stage/systemd/"
cp -r "$root/docs/." "$stage/docs/"
( cd "$stage/wheels" && sha256sum ./*.whl > SHA256SUMS )
tar -C "$work" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz: $(ls "$stage/wheels" | grep -c '\.whl$') wheels for $arch, CPython $pyver"
