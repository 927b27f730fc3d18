"""Citations in a generated answer: the source numbers it names, and the ones that name no source.

Forms read: ``[1]``, ``[2,3]`` / ``[2, 3]`` / ``[2; 3]``, adjacent ``[1][4]``, and ranges ``[1-3]`` / ``[1–3]``.
A small model can cite a number it was never given; such a citation is kept and flagged, never dropped
silently, because it is a claim with no source behind it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

_CITATION = re.compile(r"\[\s*(\d+(?:\s*(?:[,;]|[-–])\s*\d+)*)\s*\]")
_PART = re.compile(r"(\d+)\s*[-–]\s*(\d+)|(\d+)")
# A "range" wider than MAX_RANGE or ending past MAX_SOURCE_NUMBER is read as its two ends: a year span or a
# typo, not hundreds of citations.
MAX_RANGE = 20
MAX_SOURCE_NUMBER = 100


def parse_citations(text: str) -> list[int]:
    """The distinct source numbers cited in ``text``, in order of first appearance."""
    numbers: list[int] = []
    for group in _CITATION.finditer(text):
        for lo, hi, single in _PART.findall(group.group(1)):
            if single:
                numbers.append(int(single))
            elif 0 <= int(hi) - int(lo) <= MAX_RANGE and int(hi) <= MAX_SOURCE_NUMBER:
                numbers.extend(range(int(lo), int(hi) + 1))
            else:
                numbers.extend((int(lo), int(hi)))
    return list(dict.fromkeys(numbers))


def invalid_citations(cited: Iterable[int], n_sources: int) -> list[int]:
    """The cited numbers that name no source (sources are numbered 1..``n_sources``)."""
    return [n for n in cited if not 1 <= n <= n_sources]
