"""Text comparison metrics for OCR quality: edit distance and character error rate."""
from __future__ import annotations


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace to one space: layout differences are not OCR errors."""
    return " ".join(text.split())


def cer(hypothesis: str, reference: str) -> float:
    """Whitespace-normalised character error rate: edit distance / reference length."""
    hyp, ref = normalize_whitespace(hypothesis), normalize_whitespace(reference)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(hyp, ref) / len(ref)
