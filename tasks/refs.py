"""Results of calls that ran on Ray or in this process, read one way: a small job (no Ray) hands a
:class:`Resolved` value where a Ray task would hand an ``ObjectRef``, and :func:`resolve` reads either."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray


@dataclass
class Resolved:
    """The result of a call made in this process, passed where a Ray ``ObjectRef`` would be."""

    value: Any


def resolve(ref: Any) -> Any:
    """The value of ``ref``: a Ray ``ObjectRef`` (waited for) or a :class:`Resolved` (already there)."""
    return ref.value if isinstance(ref, Resolved) else ray.get(ref)
