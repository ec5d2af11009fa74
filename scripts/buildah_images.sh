#!/usr/bin/env bash
# Build the sandbox image here without Docker or a registry: buildah (vfs storage, chroot
# isolation: no daemon, no privileges) on a stand-in for python:3.11-slim-bookworm made by
# mmdebstrap from Debian bookworm (Debian's python3 3.11 and pip, tagged with the official name,
# since Docker Hub cannot be reached from here), then images/sandbox/Dockerfile unchanged, then a
# check that the image runs as uid 10001 with bubblewrap and answers its command line.
#
#   bash scripts/buildah_images.sh
#
# Only the sandbox image: the base image's torch comes from PyTorch's CPU index, which this
# workplace cannot reach, and the trainer's base is a CUDA image from a registry it cannot reach.
# The host's CA bundle is mounted into the builds, so pip and apt work behind a TLS-inspecting proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${BUILDAH_WORK:-/tmp/lad-buildah}
export STORAGE_DRIVER=vfs
ca=/etc/ssl/certs/ca-certificates.crt

if ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah mmdebstrap >/dev/null
fi
mkdir -p "$work"
base=docker.io/library/python:3.11-slim-bookworm
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
    mmdebstrap --quiet --variant=apt --include=python3,python3-pip,python3-venv,ca-certificates \
        --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED; ln -sf python3 "$1"/usr/bin/python' \
        bookworm "$work/bookworm-python.tar"
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$work/bookworm-python.tar" /
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    buildah commit --quiet "$ctr" "$base" >/dev/null
    buildah rm "$ctr" >/dev/null
fi

tag=$(.venv/bin/python -c "from lad.images import image_tag; print(image_tag())" 2>/dev/null || echo probe)
ref="lad.local/lad-sandbox:$tag"
# PIP_CERT: pip trusts the mounted bundle (it stays set in this local image, pointing at its own bundle).
buildah bud --quiet --isolation chroot --pull=never -v "$ca:$ca:ro" --env PIP_CERT="$ca" \
    -t "$ref" -f images/sandbox/Dockerfile . >/dev/null
user=$(buildah inspect --format '{{.OCIv1.Config.User}}' "$ref")
[ "$user" = "10001:10001" ] || { echo "$ref: USER is $user, expected 10001:10001"; exit 1; }
ctr=$(buildah from --pull-never "$ref")
buildah run --isolation chroot "$ctr" -- sh -c 'test "$(id -u)" = 10001 && bwrap --version && python -m lad.sandbox --help >/dev/null'
buildah rm "$ctr" >/dev/null
echo "built and checked $ref"
