#!/usr/bin/env bash
# Builds the AtoCore Ops images from a clean checkout, offline:
#   atocore-sidecar, atocore-restore-job, atocore-standin
# each FROM scratch with one statically linked binary (glibc, +crt-static).
#
# Usage: deploy/build-images.sh [IMAGE...]        (default: all three)
#
# Environment:
#   ATOCORE_IMAGE_TAG      tag of every image                      (default: local)
#   ATOCORE_BUILD_PROFILE  cargo profile: release, or `e2e` (release without LTO,
#                          opt-level 1, 16 codegen units: much faster to build;
#                          the e2e tests use it)                    (default: release)
#   CARGO_TARGET_DIR       honoured when set                       (default: <repo>/target)
#   CARGO                  cargo command                           (default: cargo)
#   DOCKER                 docker command                          (default: docker)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

all_images=(atocore-sidecar atocore-restore-job atocore-standin)
if [ "$#" -gt 0 ]; then images=("$@"); else images=("${all_images[@]}"); fi
for image in "${images[@]}"; do
  case " ${all_images[*]} " in
    *" $image "*) ;;
    *) echo "build-images: unknown image '$image' (known: ${all_images[*]})" >&2; exit 2 ;;
  esac
done

tag="${ATOCORE_IMAGE_TAG:-local}"
profile="${ATOCORE_BUILD_PROFILE:-release}"
cargo="${CARGO:-cargo}"
docker="${DOCKER:-docker}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
target="$($cargo -vV 2>/dev/null | sed -n 's/^host: //p')"
target="${target:-x86_64-unknown-linux-gnu}"
case "$target" in
  *-linux-gnu) ;;
  *) echo "build-images: host $target is not a *-linux-gnu target; this script builds static glibc binaries" >&2; exit 2 ;;
esac

case "$profile" in
  release) profile_dir=release ;;
  dev) profile_dir=debug ;;
  e2e)
    # A custom profile defined through cargo's environment configuration, so the
    # workspace Cargo.toml keeps one release profile; its own output folder means
    # switching between e2e and release builds rebuilds nothing needlessly.
    export CARGO_PROFILE_E2E_INHERITS=release
    export CARGO_PROFILE_E2E_LTO=false
    export CARGO_PROFILE_E2E_CODEGEN_UNITS=16
    export CARGO_PROFILE_E2E_OPT_LEVEL=1
    profile_dir=e2e ;;
  *) profile_dir="$profile" ;;
esac

revision="$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [ "$revision" != unknown ] && [ -n "$(git -C "$repo" status --porcelain 2>/dev/null | head -1)" ]; then
  revision="${revision}-dirty"
fi
version="$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)"
version="${version:-0.0.0}"

# --target makes RUSTFLAGS apply to the binaries only, not to build scripts and proc
# macros (which must stay dynamic to run on the host).
build_args=(build --profile "$profile" --target "$target")
for image in "${images[@]}"; do build_args+=(-p "$image" --bin "$image"); done
echo "build-images: $cargo ${build_args[*]} (static, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" "$cargo" "${build_args[@]}"

out="$CARGO_TARGET_DIR/$target/$profile_dir"
contexts="$CARGO_TARGET_DIR/docker-context"
summary=()
for image in "${images[@]}"; do
  bin="$out/$image"
  [ -x "$bin" ] || { echo "build-images: $bin was not built" >&2; exit 1; }
  linkage="$(ldd "$bin" 2>&1 || true)"
  case "$linkage" in
    *"not a dynamic executable"*|*"statically linked"*) ;;
    *) echo "build-images: $bin is not statically linked:" >&2; echo "$linkage" >&2; exit 1 ;;
  esac
  # A tiny build context: the binary and its Dockerfile, never the repository.
  ctx="$contexts/$image"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp "$bin" "$ctx/$image"
  cp "deploy/$image.Dockerfile" "$ctx/Dockerfile"
  if ! log="$("$docker" build \
      --build-arg "REVISION=$revision" \
      --build-arg "VERSION=$version" \
      --tag "$image:$tag" \
      "$ctx" 2>&1)"; then
    echo "build-images: docker build of $image:$tag failed:" >&2
    echo "$log" >&2
    exit 1
  fi
  id="$("$docker" image inspect --format '{{.Id}}' "$image:$tag")"
  size="$("$docker" image inspect --format '{{.Size}}' "$image:$tag")"
  summary+=("$(printf '%-32s %s  %6s KiB  %s %s' "$image:$tag" "${id#sha256:}" "$((size / 1024))" "$profile" "$revision")")
done
rm -rf "$contexts"

echo "build-images: built (image, id, size, profile, revision):"
for line in "${summary[@]}"; do echo "  ${line}"; done
