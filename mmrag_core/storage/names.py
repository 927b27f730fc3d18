"""Names derived from URIs and content: a document's file name and stem, and the short ids of derived
files (shards, codecs, keys), so every stage spells them the same way."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePosixPath

import numpy as np


def file_name(uri: str) -> str:
    """The last path component of a local path or URI (``s3://b/a/report.pdf`` -> ``report.pdf``)."""
    return PurePosixPath(uri.rstrip("/")).name


def file_stem(uri: str) -> str:
    """The file name without its extension (``/a/3M_2018_10K.pdf`` -> ``3M_2018_10K``)."""
    return PurePosixPath(uri.rstrip("/")).stem


def short_id(*parts: object) -> str:
    """A 16-hex id from the JSON of ``parts``: the same inputs give the same id on a re-run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ids_digest(ids: np.ndarray) -> str:
    """A 16-hex digest of an id array (as int64), naming exactly which items something holds."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


# C0 and C1 controls (newline, carriage return, ESC of ANSI sequences...) and the bidirectional overrides that
# reorder what a terminal shows: a file name holding them could break or forge a line of output.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(value: object) -> str:
    """``str(value)`` with control characters escaped (``\\n``, ``\\x1b``, ``\\u202e``), for human output and logs:
    names come from whoever made the files."""
    text = str(value)
    if not _UNPRINTABLE.search(text):
        return text
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
