#!/usr/bin/env bash
# Prints notifyd's version: `git describe --tags` of a v* tag (v1.2.0,
# 1.2.0-3-gabc1234, …-dirty) without the "v", or, with no tag yet,
# 0.1.0-dev+g<commit> (0.1.0-dev outside git). VERSION=… in the
# environment wins. With --deb, the same as a Debian version
# (1.2.0+3.gabc1234, 0.1.0~dev+gabc1234): "~" sorts a pre-release before
# its release and dpkg accepts no "-" in a version without a revision.
set -euo pipefail
cd "$(dirname "$0")/.."
base=0.1.0-dev
v=${VERSION:-}
if [ -z "$v" ]; then
	if d=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
		v=${d#v}
	elif h=$(git describe --always --dirty 2>/dev/null); then
		v=$base+g${h//-/.}
	else
		v=$base
	fi
fi
if [ "${1:-}" = --deb ]; then
	v=$(printf '%s' "$v" | sed -E 's/^v//; s/-dev/~dev/; s/-([0-9]+)-g/+\1.g/; s/-/./g; s/[^A-Za-z0-9.+~]/./g')
	case $v in [0-9]*) ;; *) v=0~$v ;; esac
fi
printf '%s\n' "$v"
