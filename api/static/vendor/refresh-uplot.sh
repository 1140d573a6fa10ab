#!/bin/sh
# Refresh the vendored uPlot from its npm package: refresh-uplot.sh VERSION
# Copies dist/uPlot.iife.min.js, dist/uPlot.min.css and LICENSE into uplot/ next to this
# script and writes the version to uplot/VERSION. Update the table in README.md too.
set -eu
version="${1:?usage: refresh-uplot.sh VERSION (e.g. 1.6.32)}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$version" >/dev/null && tar -xzf "uplot-$version.tgz")
mkdir -p "$here/uplot"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" \
   "$work/package/LICENSE" "$here/uplot/"
printf '%s\n' "$version" >"$here/uplot/VERSION"
echo "uPlot $version vendored into $here/uplot; update the version in $here/README.md"
