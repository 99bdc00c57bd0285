#!/usr/bin/env bash
# The guard against native TLS on one engine (release builds): prints the BENCHMARKS.md
# section and puts it there, in place of the previous one.
# Needs dockerd and the docker CLI (Debian docker.io), curl and python3; runs as root
# (it starts its own dockerd, on loopback only, and stops everything it started).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ca-server -p ca-client -p dtca-bench
section=$(mktemp)
trap 'rm -f "$section"' EXIT
target/release/dtca-bench guard | tee "$section"
python3 - "$section" <<'PY'
import re, sys
new = open(sys.argv[1]).read().rstrip() + "\n"
text = open("BENCHMARKS.md").read()
head = "## The guard against native TLS"
if head in text:
    start = text.index(head)
    rest = text[start + len(head):]
    m = re.search(r"\n## ", rest)
    end = start + len(head) + (m.start() + 1 if m else len(rest))
    text = text[:start] + new + ("\n" + text[end:] if m else "")
else:
    text = text.rstrip() + "\n\n" + new
open("BENCHMARKS.md", "w").write(text)
PY
