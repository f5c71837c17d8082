"""The page over the layout tests' fake assistant (tests/ui/fake_services.py), for a browser
screenshot of layout only: ``streamlit run tests/ui/fake_app.py``.  Not the real assistant."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[1]):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from fake_services import FakeServices  # noqa: E402

from assistant.config import Settings  # noqa: E402
from ui.app import render  # noqa: E402

settings = Settings.from_env(env={}, index_dir=HERE / "fake-index")
render(FakeServices(), settings)
