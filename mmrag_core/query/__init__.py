"""Query (data-flow step 8): the engine over an opened snapshot, its ranked lists (dense spaces, BM25,
routed, outline), the strategies that combine them (late, early, cascade, unified), fusion, metadata
filters and two-stage document routing.

May import ``snapshot`` and every stage before it, ``models``, ``storage`` and ``config``.
"""
