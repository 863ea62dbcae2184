#!/usr/bin/env bash
# Refresh the players the status page embeds (pipeline/status/web/vendor/)
# from npm, at the versions pinned below:
#
#   scripts/vendor-web.sh
#
# To move to a new release, change a version here, run the script, update
# pipeline/status/web/vendor/README.md, and run the browser test
# (go test -run TestStatusPageInChromium ./pipeline/status).
#
# npm pack fetches each package's tarball and checks it against the
# integrity hash the registry publishes; the minified dist file and the
# package's licence files are copied as they are, except for the trailing
# sourceMappingURL comment, which is removed because the maps are not
# embedded (a browser's developer tools would ask for them and get 404).
# Needs npm (and node) and tar. The temporary directory is removed on exit.
set -euo pipefail

HLSJS_VERSION=1.7.4
MPEGTSJS_VERSION=1.8.2

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/pipeline/status/web/vendor"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# fetch NAME VERSION: unpack the package into $tmp/NAME/package.
fetch() {
  mkdir -p "$tmp/$1"
  (cd "$tmp/$1" && npm pack --silent "$1@$2" >/dev/null && tar xzf ./*.tgz)
  got="$(node -p 'require(process.argv[1]).version' "$tmp/$1/package/package.json")"
  if [ "$got" != "$2" ]; then
    echo "vendor-web: $1: npm gave version $got, want $2" >&2
    exit 1
  fi
}

# copy SRC DST: copy a dist file without its sourceMappingURL comment.
copy() {
  sed '/^\/\/# sourceMappingURL=/d' "$1" >"$2"
}

fetch hls.js "$HLSJS_VERSION"
fetch mpegts.js "$MPEGTSJS_VERSION"

mkdir -p "$dest"
copy "$tmp/hls.js/package/dist/hls.min.js" "$dest/hls.min.js"
cp "$tmp/hls.js/package/LICENSE" "$dest/hls.js.LICENSE"
copy "$tmp/mpegts.js/package/dist/mpegts.js" "$dest/mpegts.js"
cp "$tmp/mpegts.js/package/LICENSE" "$dest/mpegts.js.LICENSE"
# The bundled third-party notices webpack extracted from mpegts.js; the
# dist file's first line points at this name.
cp "$tmp/mpegts.js/package/dist/mpegts.js.LICENSE.txt" "$dest/mpegts.js.LICENSE.txt"

echo "vendored hls.js $HLSJS_VERSION and mpegts.js $MPEGTSJS_VERSION into ${dest#"$root"/}"
