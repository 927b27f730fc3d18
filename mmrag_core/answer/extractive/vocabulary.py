"""A small curated vocabulary of financial-statement line items, and the lookup of one item for one year.

Filings name the same line differently ("Purchases of property, plant and equipment (PP&E)", "Capital
expenditures", "Payments for property and equipment"); a question uses an analyst's word ("capex"). Each
item lists its row labels most specific first and the statement it is read from, so a balance-sheet item
is not taken from the cash-flow line of the same name ("Inventories" is a change there).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mmrag_core.answer.extractive.statement_rows import Row, StatementPage


@dataclass(frozen=True)
class LineItem:
    """``labels``: regexes a normalised row label must match in full, in order of preference; ``kind``: the
    statement it is read from; ``flip``: a cash outflow printed in parentheses is reported positive."""

    name: str
    labels: tuple[str, ...]
    kind: str
    flip: bool = False


_ATTR = r"(?: attributable to (?!non|redeem)[a-z0-9&. ]+)"
ITEMS: dict[str, LineItem] = {i.name: i for i in (
    LineItem("revenue", (r"total net sales", r"total net revenues?", r"total revenues?", r"net revenues?",
                         r"net operating revenues", r"total operating revenues", r"operating revenues",
                         r"net sales", r"revenues?", r"sales", r"total net sales and revenues?"), "income"),
    LineItem("cogs", (r"total cost of sales", r"total cost of revenues?", r"cost of goods sold",
                      r"cost of sales", r"cost of revenues?", r"cost of products sold", r"cost of goods sold "
                      r"excluding depreciation (?:and|&) amortization", r"total costs? of goods sold"), "income"),
    LineItem("gross_profit", (r"gross profit", r"gross margin"), "income"),
    LineItem("operating_income", (r"operating income", r"operating income loss", r"income from operations",
                                  r"operating profit", r"income loss from operations", r"operating loss",
                                  r"total operating income"), "income"),
    LineItem("net_income", (rf"net income{_ATTR}", rf"net earnings{_ATTR}", rf"net income loss{_ATTR}",
                            r"net income", r"net earnings", r"net income loss", r"net loss", r"consolidated net income",
                            r"net earnings loss"), "income"),
    LineItem("income_tax", (r"provision for income taxes", r"income tax expense", r"income taxes",
                            r"provision benefit for income taxes", r"income tax provision"), "income"),
    LineItem("pretax_income", (r"income before income taxes", r"earnings before income taxes",
                               r"income loss before income taxes"), "income"),
    LineItem("da", (r"depreciation and amortization", r"depreciation amortization and other",
                    r"depreciation and amortization expense", r"depreciation depletion and amortization",
                    r"depreciation amortization and accretion"), "cashflow"),
    LineItem("capex", (r"purchases of property plant and equipment", r"capital expenditures",
                       r"purchases of property and equipment", r"payments for property and equipment",
                       r"additions to property plant and equipment", r"additions to property and equipment",
                       r"purchases of land buildings and equipment", r"capital expenditures including .*",
                       r"expenditures for property plant and equipment", r"property plant and equipment additions",
                       r"acquisition of property and equipment", r"purchase of property and equipment"),
             "cashflow", flip=True),
    LineItem("cfo", (r"net cash provided by operating activities", r"net cash provided by used in operating activities",
                     r"net cash from operating activities", r"total cash provided by operating activities",
                     r"cash provided by operations", r"net cash provided by operations",
                     r"net cash flows from operating activities", r"cash provided by operating activities",
                     r"net cash used in provided by operating activities", r"cash flows from operating activities"),
             "cashflow"),
    LineItem("cfi", (r"net cash (?:provided by |used in |used for |from )+investing activities",
                     r"total cash (?:provided by |used in )+investing activities",
                     r"cash (?:provided by |used by |used in )+investing activities"), "cashflow"),
    LineItem("cff", (r"net cash (?:provided by |used in |used for |from )+financing activities",
                     r"total cash (?:provided by |used in )+financing activities",
                     r"cash (?:provided by |used by |used in )+financing activities"), "cashflow"),
    LineItem("dividends", (r"dividends paid", r"cash dividends paid", r"dividends paid to shareholders",
                           r"dividends paid on common stock", r"cash dividends paid to shareholders",
                           r"payments? of dividends", r"dividends paid to stockholders", r"dividends",
                           r"cash dividends", r"dividends paid to common shareholders"), "cashflow", flip=True),
    LineItem("ppe_net", (r"property plant and equipment net", r"net property plant and equipment",
                         r"property and equipment net", r"land buildings and equipment net",
                         r"property plant and equipment net of accumulated depreciation .*",
                         r"property and equipment net of accumulated depreciation .*",
                         r"property plant and equipment"), "balance"),
    LineItem("total_assets", (r"total assets",), "balance"),
    LineItem("current_assets", (r"total current assets",), "balance"),
    LineItem("current_liabilities", (r"total current liabilities",), "balance"),
    LineItem("inventory", (r"total inventories", r"inventories", r"merchandise inventories", r"inventories net",
                           r"inventory", r"inventory net", r"total inventory"), "balance"),
    LineItem("accounts_payable", (r"accounts payable", r"accounts payable trade", r"trade accounts payable",
                                  r"accounts payable and accrued liabilities"), "balance"),
    LineItem("accounts_receivable", (r"accounts receivable net", r"accounts receivable", r"receivables net",
                                     r"receivables", r"trade receivables net", r"trade receivables",
                                     r"accounts receivable net of allowances?.*", r"trade accounts receivable.*",
                                     r"accounts and notes receivable net"), "balance"),
    LineItem("cash", (r"cash and cash equivalents", r"cash and equivalents"), "balance"),
    LineItem("total_liabilities", (r"total liabilities",), "balance"),
    LineItem("equity", (r"total shareholders equity", r"total stockholders equity", r"total equity"), "balance"),
)}


# Items that may be read off another statement when their own is not among the sources (ranked after it).
_CROSS_STATEMENT = frozenset({"net_income", "da"})


def normalise_label(label: str) -> str:
    """Lower case, without parentheses, dot leaders, footnote marks and punctuation: a label to match."""
    s = re.sub(r"\([^)]*\)", " ", label.lower())
    s = re.sub(r"\.{2,}.*$", "", s)
    s = s.replace("’", "'").replace("'", "").replace("&", " and ")
    s = re.sub(r"[^a-z0-9 ]+", " ", s)
    s = re.sub(r"\b(?:total )?(?:note|notes)\b.*$", "", s)
    return re.sub(r"\s+", " ", s).strip().replace(" and and ", " and ")


@dataclass(frozen=True)
class Found:
    """A line item's amount as read: the page it is on, its row, the printed cell and the value in units
    of the statement (``value``; scale in ``page.scale``)."""

    item: str
    year: int
    value: float
    cell: str
    row: Row
    page: StatementPage


def find_item(pages: Sequence[StatementPage], item: str, year: int) -> Found | None:
    """``item`` for fiscal ``year`` from the best row of the pages: the earliest label pattern that matches,
    on a page of the item's statement first, then in source order; None when no page states it."""
    spec = ITEMS[item]
    best: tuple[tuple[int, int, int], Found] | None = None
    for page in pages:
        kind_rank = 0 if page.kind == spec.kind else (1 if page.kind == "other" else 2)
        if kind_rank == 2 and item not in _CROSS_STATEMENT:
            continue
        for n, row in enumerate(page.rows):
            if year not in row.values:
                continue
            label = normalise_label(row.label)
            rank = next((i for i, p in enumerate(spec.labels) if re.fullmatch(p, label)), None)
            if rank is None:
                continue
            key = (kind_rank, rank, n)
            if best is None or key < best[0]:
                cell, value = row.values[year]
                if spec.flip:
                    value = abs(value)
                best = (key, Found(item, year, value, cell, row, page))
    return best[1] if best else None
