"""The built-in live agents. Imported lazily: ``import orchkit`` never imports
scikit-learn, openai or TensorFlow, and simulation never needs them."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PersonalizedLearningAgent": ".learning",
    "AITutorAgent": ".tutor",
    "SpeechAnalysisAgent": ".speech",
    "SyntheticAgent": ".synthetic",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'orchkit.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
