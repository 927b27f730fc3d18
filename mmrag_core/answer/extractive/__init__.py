"""The extractive answerer, the offline default: reads the statement row or sentence that states the value asked
for (metric matched to row labels through a financial-statement vocabulary, the period's column, the unit and
scale from the table header), computes derived metrics from cited values with the formula shown, and abstains
when no source states the value. It never prints a number that is not in a cited source or computed from one.

``statement_rows`` reads a page as rows, ``vocabulary`` maps metrics to line items, ``calculations`` reads the
question and computes, ``verdicts`` answers yes/no and which-option questions, ``answerer`` puts them together.
"""
from mmrag_core.answer.extractive.answerer import answer_extractively, answer_hits
from mmrag_core.answer.extractive.types import CitedValue, ExtractiveAnswer, SourcePage

__all__ = ["CitedValue", "ExtractiveAnswer", "SourcePage", "answer_extractively", "answer_hits"]
