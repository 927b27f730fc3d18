"""Page context: what a chunk's context prefix and a page's outline are made of. The document's facts (title,
issuer, form, period: ``doc_facts``), each page's headings (``page_headings``), and both composed per page
within a token budget (``page_context``)."""
