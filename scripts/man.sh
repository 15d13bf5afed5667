#!/usr/bin/env bash
# Renders one of the manual pages in docs/ (Markdown) to roff on stdout,
# with Debian's go-md2man (package go-md2man, installed by scripts/deps.sh).
#
#   scripts/man.sh docs/notifyd.md notifyd 8 "kernel-event notification bus" VERSION
#
# The Markdown stays readable on GitHub; this adds what a man page needs
# and the Markdown does not say, so that man(1) and mandb(8) read it:
#   - a .TH line (name, section, date of the file's last commit, version);
#   - a NAME section "name \- description" (replacing the page's own, whose
#     em dash lexgrog/whatis do not parse), then DESCRIPTION for any text
#     before the first section;
#   - upper-case section names;
#   - tables whose last column wraps (tbl text blocks, "x" column,
#     left-aligned), so that no table is wider than an 80-column terminal;
#   - the '\" t line that makes man run tbl.
set -euo pipefail
if [ $# -ne 5 ]; then
	echo "usage: $0 SRC.md NAME SECTION DESCRIPTION VERSION" >&2
	exit 2
fi
src=$1 name=$2 sect=$3 desc=$4 version=$5
md2man=$(command -v go-md2man) || {
	echo "man.sh: go-md2man not installed (apt-get install go-md2man, or scripts/deps.sh)" >&2
	exit 1
}
[ -r "$src" ] || { echo "man.sh: cannot read $src" >&2; exit 1; }

# The page's date: its last commit, so that a rebuild of the same tree
# gives the same page (SOURCE_DATE_EPOCH overrides, as for Debian builds).
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
else
	date=$(git -C "$(dirname "$src")" log -1 --format=%cs -- "$(basename "$src")" 2>/dev/null || true)
	[ -n "$date" ] || date=$(date -u -r "$src" +%Y-%m-%d)
fi

# Markdown pass: outside fenced code, drop the H1 title and any NAME
# section, add NAME (and DESCRIPTION before the first "##"), upper-case
# the "##" headings.
md=$(awk -v name="$name" -v desc="$desc" '
	function header() {
		if (!done) { printf "## NAME\n\n%s \\- %s\n\n", name, desc; done = 1 }
	}
	/^```/ { fence = !fence }
	fence { header(); if (!sawsec && !descr) { print "## DESCRIPTION\n"; descr = 1 } print; next }
	/^# / && !title { title = 1; next }
	/^## / {
		header(); sawsec = 1
		skip = ($0 ~ /^## NAME[ \t]*$/)
		if (!skip) print "## " toupper(substr($0, 4))
		next
	}
	skip { next }
	/^[ \t]*$/ && !done { next }
	{ header(); if (!sawsec && !descr) { print "## DESCRIPTION\n"; descr = 1 } print }
	END { header() }
' "$src")

roff=$(printf '%s\n' "$md" | "$md2man")

# roff pass: the header, and wrapping tables. go-md2man writes a table as
# .TS, options, one format line per row kind ending in ".", then rows of
# tab-separated cells where a text block opens with "T{" at the end of a
# line and closes with "T}" at the start of one.
printf '%s\n' "'\\\" t"
printf '.TH "%s" "%s" "%s" "notifyd %s" "notifyd manual"\n' \
	"$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')" "$sect" "$date" "$version"
printf '%s\n' "$roff" | awk '
	# wrap the last cell of a row segment in a text block unless it is one
	function row(s,    n, f, i, out) {
		n = split(s, f, "\t")
		for (i = 1; i <= n; i++) {
			if (i > 1) out = out "\t"
			if (i == n && f[i] != "T{") { out = out "T{\n" f[i] "\nT}" }
			else { out = out f[i]; if (f[i] == "T{") inblock = 1 }
		}
		return out
	}
	# text blocks left-aligned: a narrow column cannot be justified
	# without troff warning "cannot adjust line"
	/^\.TS/ { table = 1; fmt = 1; print ".ad l"; print; next }
	table && /^\.TE/ { table = 0; print; print ".ad b"; next }
	table && fmt {
		# options line ("allbox;") or a format line; the last format
		# line ends with "."
		if ($0 ~ /;[ \t]*$/) { print; next }
		line = $0; sub(/[ \t]+$/, "", line)
		end = (line ~ /\.$/); if (end) sub(/[ \t]*\.$/, "", line)
		sub(/l$/, "lx", line)
		print line (end ? " ." : "")
		if (end) fmt = 0
		next
	}
	table && inblock {
		if ($0 ~ /^T}/) {
			inblock = 0
			rest = substr($0, 3)
			if (rest ~ /^\t/) print "T}\t" row(substr(rest, 2))
			else print $0
		} else print
		next
	}
	table { print row($0); next }
	# "name \- description", as lexgrog and whatis expect
	/^\.SH NAME/ { name = 1; print; next }
	name && !/^\./ { sub(/ - /, " \\- "); name = 0 }
	{ print }
'
