"""A tiny corpus of two companies' annual reports (six pages each: cover, MD&A, the three statements, a note),
published with real all-MiniLM-L6-v2 vectors, and labelled questions over it: enough for mining and a few
training steps."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mmrag_core.storage.items import Item, ItemKind, item_id
from mmrag_core.storage.store import Store

COMPANIES = {"ACME_2020_10K": ("ACME CORPORATION", 2020, 812), "BOLT_2021_10K": ("BOLT INDUSTRIES, INC.", 2021, 455)}


def _pages(issuer: str, year: int, capex: int) -> list[tuple[str, str]]:
    """(headings, text) per page."""
    return [
        ("Annual Report", f"{issuer} annual report on Form 10-K for the fiscal year {year}. Shareholder letter."),
        ("Management's Discussion and Analysis | Liquidity and Capital Resources",
         f"Liquidity and capital resources. We invested in new plants during {year} and expect capital "
         f"spending to grow. Operating cash flow funded our investments and dividends."),
        ("Consolidated Statements of Cash Flows",
         f"Cash flows from operating activities\nNet income\n1,204\nDepreciation and amortization\n301\n"
         f"Net cash provided by operating activities\n1,870\nCash flows from investing activities\n"
         f"Purchases of property, plant and equipment\n({capex})\nDividends paid\n(200)"),
        ("Consolidated Balance Sheets",
         "Assets\nCash and cash equivalents\n950\nInventories\n610\nTotal current assets\n2,400\n"
         "Property, plant and equipment, net\n3,100\nTotal assets\n7,800\nAccounts payable\n410\n"
         "Total current liabilities\n1,300"),
        ("Consolidated Statements of Income",
         "Net sales\n9,900\nCost of sales\n6,100\nGross profit\n3,800\nSelling, general and administrative "
         "expenses\n1,900\nOperating income\n1,900\nNet income\n1,204"),
        ("Note 7 — Property, Plant and Equipment",
         f"Property, plant and equipment consist of land, buildings and machinery. Depreciation is straight-line. "
         f"Construction in progress related to new plants in {year}."),
    ]


def corpus_items() -> list[tuple[str, str, list[Item]]]:
    """(sha256, source uri, items) per document: a chunk and an outline per page."""
    docs = []
    for name, (issuer, year, capex) in COMPANIES.items():
        sha = hashlib.sha256(name.encode()).hexdigest()
        uri = f"/corpus/{name}.pdf"
        facts = f"{issuer} | fiscal year ended December 31, {year} (FY{year}) | Form 10-K annual"
        items = []
        for page, (headings, text) in enumerate(_pages(issuer, year, capex)):
            box = (0.0, 0.0, 612.0, 792.0)
            items.append(Item(item_id(sha, "chunk", page, 0), ItemKind.CHUNK, uri, sha, page, box,
                              f"{headings}\n{text}", context=f"{facts} | {headings}"))
            items.append(Item(item_id(sha, "outline", page, 0), ItemKind.OUTLINE, uri, sha, page, box,
                              f"{facts} | {headings}"))
        docs.append((sha, uri, items))
    return docs


def publish_corpus(root: Path) -> Store:
    """A store at ``root`` with the corpus published (text space, MiniLM) and LATEST set."""
    from tests.published import publish_minilm_docs

    store = Store(root)
    publish_minilm_docs(store, corpus_items())
    return store


def write_labels(folder: Path) -> tuple[Path, Path]:
    """Labelled questions (queries.jsonl with answers, qrels.tsv with 0-based pages) about the corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        ("q1", "What was ACME's FY2020 capital expenditure? Use the cash flow statement.", "$812", "ACME_2020_10K", 2),
        ("q2", "What is BOLT's FY2021 capex from its statement of cash flows?", "$455", "BOLT_2021_10K", 2),
        ("q3", "ACME FY2020 total assets in the balance sheet", "$7,800", "ACME_2020_10K", 3),
        ("q4", "BOLT FY2021 gross profit from the income statement", "$3,800", "BOLT_2021_10K", 4),
        ("q5", "What was BOLT's net PP&E at the end of FY2021?", "$3,100", "BOLT_2021_10K", 3),
        ("q6", "ACME FY2020 cost of goods sold", "$6,100", "ACME_2020_10K", 4),
    ]
    q = folder / "queries.jsonl"
    q.write_text("".join(json.dumps({"query_id": i, "text": t, "answer": a, "doc_name": d}) + "\n"
                         for i, t, a, d, _ in rows))
    r = folder / "qrels.tsv"
    r.write_text("query_id\tcorpus_id\tscore\n" + "".join(f"{i}\t{d}#p{p}\t1\n" for i, _, _, d, p in rows))
    return q, r
