"""``python -m assistant``: set-up helpers (``fetch-model``, ``paths``); ``ask`` joins later."""

from __future__ import annotations

import argparse
import sys

from assistant.config import DEFAULT_MODEL, Settings
from assistant.models import PRESETS, ModelError, fetch_model


def _cmd_fetch_model(args: argparse.Namespace, settings: Settings) -> int:
    try:
        path = fetch_model(args.preset, settings.models_dir)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_paths(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import SAMPLE_CORPUS

    values = {
        "home": settings.home,
        "index": settings.index,
        "models": settings.models_dir,
        "sample_corpus": SAMPLE_CORPUS,
    }
    wanted = [k for k in values if getattr(args, k)]
    for key in wanted or values:
        print(values[key] if wanted else f"{key}: {values[key]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m assistant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch-model", help="download a model preset into the models folder")
    fetch.add_argument("preset", nargs="?", default=DEFAULT_MODEL, choices=sorted(PRESETS))
    fetch.set_defaults(func=_cmd_fetch_model)

    paths = sub.add_parser("paths", help="print where models, indexes and the sample corpus are")
    for key in ("home", "index", "models", "sample_corpus"):
        paths.add_argument(f"--{key.replace('_', '-')}", action="store_true", dest=key)
    paths.set_defaults(func=_cmd_paths)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args, Settings.from_env())
