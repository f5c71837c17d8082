#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh: a project virtualenv with the CPU build
# of torch, the project installed in it, and the default model fetched (reused on later runs;
# with the test extra, the tests' models instead).
# Usage: source scripts/setup.sh [extras]   (extras: "test" for the test dependencies; it also
# fetches the test fixtures among the model presets: one model of each newer family)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GUIDELINES_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating virtualenv $VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# torch: always the CPU build. Where a CPU wheel lies in pip's find-links (as on our build
# machines) take it without touching any index, then its own dependencies from the usual
# indexes; elsewhere take it from PyTorch's CPU index. TORCH_SPEC / TORCH_INDEX_URL override.
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "== installing $TORCH_SPEC (CPU build)"
    if "$VPY" -m pip install -q --no-index --no-deps "$TORCH_SPEC" 2>/dev/null; then
        "$VPY" -m pip install -q "$TORCH_SPEC"  # already there: only its dependencies
    else
        "$VPY" -m pip install -q "$TORCH_SPEC" \
            --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
    fi
fi

echo "== installing the project${EXTRAS:+ [$EXTRAS]}"
if [ -n "$EXTRAS" ]; then
    "$VPY" -m pip install -q -e "$ROOT[$EXTRAS]"
else
    "$VPY" -m pip install -q -e "$ROOT"
fi

case ",$EXTRAS," in
    *,test,*)
        # the tests run the fast option (SmolLM2-135M), not the 1.1 GB default
        echo "== test models (SmolLM2-135M; Qwen2.5-Coder-0.5B: qwen2; Gemma-3-270M: gemma3)"
        "$VPY" -m assistant fetch-model smollm2-135m qwen2.5-coder-0.5b gemma-3-270m
        ;;
    *)
        echo "== default model (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 1.1 GB)"
        "$VPY" -m assistant fetch-model
        ;;
esac
