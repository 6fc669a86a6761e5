#!/usr/bin/env bash
# Downloads Debian's libonnxruntime-dev (suite trixie) with `apt-get download` and a private
# sources list, and unpacks it into $1. Nothing is installed on the system. The archive mirror is
# the one this machine's apt is already configured with (or $SPATTN_DEBIAN_MIRROR).
set -euo pipefail
dest=$1
mirror=${SPATTN_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  # deb822 sources (URIs: ...) or one-line sources (deb URI suite ...); skip security archives.
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v security | head -n 1 || true)
fi
if [[ -z $mirror ]]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" {print $2}' | grep -v security | head -n 1 || true)
fi
[[ -n $mirror ]] || { echo "no Debian mirror configured for apt; set SPATTN_DEBIAN_MIRROR" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "apt-get not found" >&2; exit 1; }
mkdir -p "$dest/lists/partial" "$dest/cache/archives/partial"
echo "deb $mirror trixie main" >"$dest/sources.list"
opts=(-o Dir::Etc::SourceList="$dest/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o Dir::State::Lists="$dest/lists" -o Dir::Cache="$dest/cache" -o Debug::NoLocking=1
      -o APT::Sandbox::User=root)
apt-get "${opts[@]}" update -qq >/dev/null
(cd "$dest" && apt-get "${opts[@]}" download libonnxruntime-dev >/dev/null)
deb=$(ls "$dest"/libonnxruntime-dev_*.deb | head -n 1)
dpkg-deb -x "$deb" "$dest/root"
echo "unpacked $(basename "$deb")"
