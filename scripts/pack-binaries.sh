#!/usr/bin/env bash
# Packs the built binaries and every shared library they load (but glibc's)
# into one tarball, to run them on a machine that has a GPU but not the build
# dependencies (e.g. a cloud GPU host with only the NVIDIA driver):
#
#   bash scripts/pack-binaries.sh OUT.tar.xz [BINARY ...]
#   # there: tar xf OUT.tar.xz && LD_LIBRARY_PATH=$PWD/pack/lib pack/bin/pensieve ...
#
# Default binaries: pensieve, gpu_tests and models_tests from build/release.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "$1")
shift
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(build/release/bin/pensieve build/release/tests/gpu_tests build/release/tests/models_tests)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/pack/bin" "$stage/pack/lib"
for b in "${bins[@]}"; do
  strip -o "$stage/pack/bin/$(basename "$b")" "$b"
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*) ;;
      *) cp -L "$lib" "$stage/pack/lib/" ;;
    esac
  done
done
# -9: a dictionary large enough to see the three binaries' shared GPU code once.
tar -C "$stage" -cf - pack | xz -9 -T2 > "$out"
echo "packed $(ls "$stage/pack/bin" | wc -l) binaries and $(ls "$stage/pack/lib" | wc -l) libraries: $(du -h "$out" | cut -f1) $out"
