#!/usr/bin/env bash
# The README's screenshot, docs/screenshot.png: the browser test (tests/ui/test_ui_browser.py)
# run with GUIDELINES_UI_SCREENSHOT set, so the picture it takes of a cited answer is kept.
# Needs Chromium (apt-get install chromium chromium-driver) and the test extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPY="${VPY:-$ROOT/.venv/bin/python}"
cd "$ROOT"
GUIDELINES_UI_SCREENSHOT=docs/screenshot.png \
    exec "$VPY" -m pytest tests/ui/test_ui_browser.py -q -rs "$@"
