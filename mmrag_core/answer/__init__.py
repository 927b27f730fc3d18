"""Answer (data-flow step 9): cited answers from a query's hits: prompts with numbered sources, generators
(a local model or an OpenAI-compatible endpoint), citation parsing and checks.

May import ``query`` and every stage before it, ``models``, ``storage`` and ``config``.
"""
