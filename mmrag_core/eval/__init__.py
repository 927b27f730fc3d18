"""Eval: retrieval metrics (recall, MRR, nDCG at the qrels' level), the BM25 baseline, answer metrics, and
reports (markdown, JSON, plot) for queries with relevance judgements.

May import ``learn`` and every stage before it, ``models``, ``storage`` and ``config``.
"""
