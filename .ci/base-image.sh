#!/usr/bin/env bash
# Builds a local Python base image without a registry (debootstrap + docker import),
# cached by tag: a second run on the same machine is a no-op.
set -euo pipefail
tag="${1:-edgeship-base:bookworm-py3}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already present"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
dir=$(mktemp -d /tmp/edgeship-rootfs.XXXXXX)
trap 'rm -rf "$dir"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$dir" >/tmp/edgeship-debootstrap.log 2>&1
tar -C "$dir" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$tag"
echo "built base image $tag"
