#!/usr/bin/env bash
# One command for the demo on the embedded defaults: install, fetch the default model, index the
# sample corpus (incremental: later runs add nothing), then serve the Streamlit page.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
echo "== sample index"
INDEX="$("$VPY" -m assistant paths --index)"
"$VPY" -m ingest build --input "$("$VPY" -m assistant paths --sample-corpus)" --index "$INDEX"
echo "== serving on http://localhost:${PORT:-8501}"
exec "$VPY" -m streamlit run "$ROOT/ui/app.py" --server.headless true \
    --server.port "${PORT:-8501}" --browser.gatherUsageStats false
