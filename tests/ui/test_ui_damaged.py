"""A damaged index is a setup problem on the page (AppTest, the real services): the file at fault
and the command that repairs it, no traceback, the chat input disabled."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "ui" / "app.py"
RUN_TIMEOUT_S = 600


def test_a_truncated_index_names_its_file_and_the_rebuild(monkeypatch, tmp_path, small_index):
    copy = tmp_path / "damaged"
    shutil.copytree(small_index, copy)
    conn = sqlite3.connect(copy / "index.sqlite")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(copy / "index.sqlite", "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    monkeypatch.setenv("GUIDELINES_INDEX", str(copy))
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT_S).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("**Index cannot be used.**") and str(copy) in e
               and ": index.sqlite " in e and "Rebuild it" in e for e in errors), errors
    fixes = [c.value for c in at.code]
    assert any(c.startswith(f"mv {copy} {copy}.damaged && python -m ingest build --input ")
               for c in fixes), fixes
    assert at.chat_input[0].disabled
