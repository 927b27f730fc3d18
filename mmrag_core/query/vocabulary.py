"""A curated financial vocabulary: how an analyst asks for a line item ("capex", "D&A") against how a filing
prints it ("Purchases of property, plant and equipment"). The query stage adds the printed labels to a question's
BM25 text (:func:`expand_query`: a question's words rarely occur on the statement page that answers it), and
fine-tuning phrases its self-supervised questions with it (:mod:`mmrag_core.learn.pairs`).

Kept apart from ``answer/extractive/vocabulary.py``: that one holds regexes over normalised row labels; these are
plain phrases on both sides and the statements' names. The terms are general accounting usage (capex, PP&E,
D&A, COGS, SG&A, working capital, free cash flow, ...), not read from an evaluation set.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """``asks``: how questions name the item; ``labels``: how statements print it (lower case);
    ``statement``: the statement it is read from (a key of :data:`STATEMENTS`)."""

    asks: tuple[str, ...]
    labels: tuple[str, ...]
    statement: str


# Statement kinds: how a question names each, and headings that mark its page.
STATEMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cashflow": (("cash flow statement", "statement of cash flows", "cash flows statement"),
                 ("statements of cash flows", "statement of cash flows", "cash flows")),
    "income": (("income statement", "statement of income", "P&L", "statement of operations"),
               ("statements of income", "statement of income", "statements of operations", "statement of operations",
                "statements of earnings", "statement of earnings", "income statements")),
    "balance": (("balance sheet", "statement of financial position"),
                ("balance sheets", "balance sheet", "statements of financial position", "financial position")),
}

TERMS: tuple[Term, ...] = (
    Term(("capital expenditure", "capex", "capital spending"),
         ("purchases of property, plant and equipment", "capital expenditures", "purchases of property and equipment",
          "payments for property and equipment", "additions to property, plant and equipment",
          "additions to property and equipment", "purchases of property, equipment"), "cashflow"),
    Term(("depreciation and amortization", "D&A"),
         ("depreciation and amortization", "depreciation, amortization", "depreciation, depletion and amortization"),
         "cashflow"),
    Term(("cash from operations", "operating cash flow", "cash flow from operating activities"),
         ("net cash provided by operating activities", "net cash provided by (used in) operating activities",
          "cash provided by operations", "net cash from operating activities"), "cashflow"),
    Term(("dividends paid", "cash dividends"), ("dividends paid", "cash dividends paid", "payments of dividends"),
         "cashflow"),
    Term(("share repurchases", "stock buybacks"),
         ("repurchases of common stock", "purchases of treasury stock", "repurchase of common stock",
          "purchases of company common stock"), "cashflow"),
    Term(("free cash flow",), ("net cash provided by operating activities",), "cashflow"),
    Term(("revenue", "total revenue", "net sales", "top line"),
         ("total revenues", "total net sales", "net revenues", "net sales", "total net revenue", "revenues"), "income"),
    Term(("cost of goods sold", "COGS", "cost of sales"),
         ("cost of goods sold", "cost of sales", "cost of revenue", "cost of revenues", "cost of products sold"),
         "income"),
    Term(("gross profit", "gross margin"), ("gross profit", "gross margin"), "income"),
    Term(("SG&A", "selling, general and administrative expenses"),
         ("selling, general and administrative", "selling, general and administrative expenses",
          "selling and administrative expenses"), "income"),
    Term(("operating income", "operating profit", "EBIT"),
         ("operating income", "income from operations", "operating profit"), "income"),
    Term(("net income", "net earnings", "bottom line"),
         ("net income", "net earnings", "net income attributable to"), "income"),
    Term(("interest expense",), ("interest expense", "interest expense, net"), "income"),
    Term(("income tax expense", "effective tax"), ("provision for income taxes", "income tax expense"), "income"),
    Term(("earnings per share", "EPS"), ("diluted", "earnings per share", "net income per share"), "income"),
    Term(("net PP&E", "net property, plant and equipment", "net fixed assets"),
         ("property, plant and equipment, net", "property, plant and equipment - net", "property and equipment, net",
          "net property, plant and equipment"), "balance"),
    Term(("working capital", "current assets", "current liabilities"),
         ("total current assets", "total current liabilities"), "balance"),
    Term(("total assets",), ("total assets",), "balance"),
    Term(("inventory", "inventories"), ("inventories", "total inventories"), "balance"),
    Term(("accounts payable",), ("accounts payable",), "balance"),
    Term(("accounts receivable", "receivables"), ("accounts receivable", "trade receivables"), "balance"),
    Term(("total debt", "long-term debt"), ("long-term debt", "total debt"), "balance"),
    Term(("shareholders' equity", "book value"),
         ("total shareholders' equity", "total stockholders' equity", "total equity"), "balance"),
)


def norm(text: str) -> str:
    """Lower case, one space between words, unified dashes and apostrophes: how labels are matched."""
    text = text.lower().replace("\u2019", "'").replace("\u2014", "-").replace("\u2013", "-")
    return re.sub(r"\s+", " ", text).strip()


def statement_of(headings: str) -> str | None:
    """The statement kind a page's (normalised) headings name, or None."""
    h = norm(headings)
    if "consolidated" not in h and "condensed" not in h:
        return None
    for kind, (_, marks) in STATEMENTS.items():
        if any(m in h for m in marks):
            return kind
    return None


def terms_on(text: str, statement: str) -> list[tuple[Term, str]]:
    """(term, label found) for each term of ``statement`` whose printed label starts a line of ``text``."""
    lines = {norm(line).rstrip(":$ ") for line in text.splitlines()}
    found = []
    for term in TERMS:
        if term.statement != statement:
            continue
        for label in term.labels:
            if any(line.startswith(label) for line in lines):
                found.append((term, label))
                break
    return found


def expand_query(text: str) -> str:
    """``text`` followed by what statements print for the analyst terms it uses: the statement's heading when it
    names a statement ("cash flow statement" -> "statements of cash flows") and the first two printed labels of each
    line item it asks for ("capex" -> "purchases of property, plant and equipment", "capital expenditures").
    Unchanged when it uses none, so other questions (and other domains) search as before."""
    t = norm(text)
    extra: list[str] = []
    for asks, marks in STATEMENTS.values():
        if any(a.lower() in t for a in asks):
            extra.append(marks[0])
    for term in TERMS:
        if any(re.search(r"\b" + re.escape(a.lower()) + r"\b", t) for a in term.asks):
            extra += list(term.labels[:2])
    return text if not extra else text + " " + " ".join(extra)
