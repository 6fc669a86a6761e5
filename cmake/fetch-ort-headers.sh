#!/usr/bin/env bash
# Downloads Debian's libonnxruntime-dev (trixie) with a private sources list and unpacks it into $1.
# Nothing is installed on the system.
set -euo pipefail
dest=$1
mkdir -p "$dest/lists/partial" "$dest/cache/archives/partial"
echo "deb http://deb.debian.org/debian trixie main" >"$dest/sources.list"
opts=(-o Dir::Etc::SourceList="$dest/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o Dir::State::Lists="$dest/lists" -o Dir::Cache="$dest/cache" -o Debug::NoLocking=1
      -o APT::Sandbox::User=root)
apt-get "${opts[@]}" update -qq >/dev/null
(cd "$dest" && apt-get "${opts[@]}" download libonnxruntime-dev >/dev/null)
deb=$(ls "$dest"/libonnxruntime-dev_*.deb | head -n 1)
dpkg-deb -x "$deb" "$dest/root"
echo "unpacked $(basename "$deb")"
