#!/usr/bin/env bash
# Set up (idempotent) and run the offline demo: synthetic benchmark -> train tiny -> evaluate
# the three retrieval modes -> index the test videos -> search them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/eercf demo --out demo_out "$@"
