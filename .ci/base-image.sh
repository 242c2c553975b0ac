#!/usr/bin/env bash
# Builds a local Python base image without a registry (debootstrap + docker import),
# cached by tag: a second run on the same machine is a no-op.
set -euo pipefail
tag="${1:-edgeship-base:bookworm-py3}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  # An image from an older version of this script has / at 0700: rebuild it.
  if [ "$(docker run --rm --user 10001 "$tag" python3 -c 'print(1)' 2>/dev/null)" = "1" ]; then
    echo "base image $tag already present"
    exit 0
  fi
  echo "base image $tag is unusable by a non-root user; rebuilding"
  docker rmi -f "$tag" >/dev/null
fi
command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
dir=$(mktemp -d /tmp/edgeship-rootfs.XXXXXX)
trap 'rm -rf "$dir"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$dir" >/tmp/edgeship-debootstrap.log 2>&1
# mktemp made the root 0700; docker import keeps it, and a non-root USER could then run nothing.
chmod 755 "$dir"
tar -C "$dir" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$tag"
echo "built base image $tag"
