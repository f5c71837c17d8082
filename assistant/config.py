"""Configuration in one place: paths, the default model and index, generation defaults.

Everything else receives a :class:`Settings` (or the values it holds); nothing below the
``assistant`` package reads the environment.  Environment variables:

``GUIDELINES_HOME``   where models and indexes live (default ``~/.cache/guidelines-assistant``)
``GUIDELINES_INDEX``  the index folder the assistant and the page use (default: the sample index)
``GUIDELINES_MODEL``  a model preset name, a GGUF path (default ``qwen2.5-coder-1.5b``), or a served
                      model ``openai:<base_url>#<model>`` (an OpenAI-compatible server)
``GUIDELINES_SERVED_TIMEOUT``  seconds a served model may stay silent before the answer fails
``OPENAI_API_KEY``    the served model's API key (local servers ignore it)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from assistant.checks.refusal import RefusalPolicy

# The page's and ``ask``'s model, chosen by measurement (README, "The default model, compared"):
# its answers are far better supported by the passages they cite than SmolLM2's.
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
# The fast option (98 MB, answers in seconds) and the model the tests run (tests/conftest.py).
FAST_MODEL = "smollm2-135m"
SAMPLE_INDEX_NAME = "sample"


def _default_home() -> Path:
    return Path.home() / ".cache" / "guidelines-assistant"


@dataclass(frozen=True)
class Settings:
    """What the assistant, its CLI and its page need to know, resolved once."""

    home: Path = field(default_factory=_default_home)
    index_dir: Path | None = None  # None: the sample index under ``home``
    model: str = DEFAULT_MODEL  # a preset name (see assistant.model.presets) or a GGUF path
    k: int = 4  # passages retrieved per question
    # query-passage cosine similarity below which a passage is not relevant (all-MiniLM-L6-v2:
    # off-topic questions score about 0.05-0.15, on-topic ones 0.4 and more)
    min_similarity: float = 0.25
    temperature: float = 0.0
    # 1.0 = off (the engine's default is 1.1): answers quote passages and repeat citations;
    # the repetition guard below handles loops instead
    repeat_penalty: float = 1.0
    max_tokens: int = 384
    n_ctx: int = 4096  # context the engine allocates (capped by the model's own)
    seed: int = 0
    # refuse before generating when the passages' evidence is this weak (assistant.checks.refusal;
    # chosen on the even-numbered dev questions, docs/assistant.md "Refusals"); None: never
    refusal_policy: RefusalPolicy | None = field(default_factory=RefusalPolicy)
    served_timeout: float = 60.0  # a served model silent this long fails the answer
    served_api_key: str = field(default="not-needed", repr=False)
    # the repetition guard (engine.repetition): DRY at llama.cpp's usual strength, and a stop
    # once the answer's last 32 tokens copy an earlier span of it (numbers aside) or most of its
    # last positions repeat its own word trigrams (near repeats; 0 turns both off)
    dry_multiplier: float = 0.8
    loop_stop_tokens: int = 32

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def index(self) -> Path:
        if self.index_dir is not None:
            return self.index_dir
        return self.home / "indexes" / SAMPLE_INDEX_NAME

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from the environment (``os.environ`` by default), then ``overrides``."""
        env = dict(os.environ) if env is None else env
        settings = cls()
        if env.get("GUIDELINES_HOME"):
            settings = replace(settings, home=Path(env["GUIDELINES_HOME"]).expanduser())
        if env.get("GUIDELINES_INDEX"):
            settings = replace(settings, index_dir=Path(env["GUIDELINES_INDEX"]).expanduser())
        if env.get("GUIDELINES_MODEL"):
            settings = replace(settings, model=env["GUIDELINES_MODEL"])
        if env.get("GUIDELINES_SERVED_TIMEOUT"):
            settings = replace(settings, served_timeout=float(env["GUIDELINES_SERVED_TIMEOUT"]))
        if env.get("OPENAI_API_KEY"):
            settings = replace(settings, served_api_key=env["OPENAI_API_KEY"])
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **clean)  # type: ignore[arg-type]
