"""Chunk context: document facts (title, issuer, form, period) and page headings found on real PDFs,
the token budget, the raw text kept for display, and records invalidated when the setting changes."""
from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from mmrag_core.ingest.extract.chunking import whitespace_token_counter
from mmrag_core.config import Settings
from mmrag_core.ingest.encoder_inputs import text_inputs
from mmrag_core.ingest.record_keys import config_key, record_key
from mmrag_core.ingest.extract import extract_document
from mmrag_core.ingest.extract.context.page_context import compose
from mmrag_core.ingest.extract.context.doc_facts import document_facts, readable_file_name
from mmrag_core.storage.items import items_to_table
from mmrag_core.models.text_encoder import load_token_counter, resolve_text_model

SHA = "cd" * 32


@pytest.fixture(scope="module")
def filings(test_data: Path) -> Path:
    return test_data / "financebench-dev" / "pdfs"


@pytest.fixture(scope="module")
def born_digital(test_data: Path) -> Path:
    return test_data / "pdfs" / "born_digital"


@pytest.fixture(scope="module")
def minilm_counter():
    return load_token_counter("all-MiniLM-L6-v2")


def facts_of(path: Path):
    with pymupdf.open(path) as doc:
        return document_facts(doc, f"file://{path}")


@pytest.mark.parametrize(
    ("name", "issuer", "period", "form"),
    [
        ("3M_2018_10K.pdf", "3M COMPANY", "fiscal year ended December 31, 2018 (FY2018)", "Form 10-K annual report"),
        ("ACTIVISIONBLIZZARD_2019_10K.pdf", "ACTIVISION BLIZZARD, INC.", "fiscal year ended December 31, 2019 (FY2019)",
         "Form 10-K annual report"),
        ("AMCOR_2022_8K_dated-2022-07-01.pdf", "AMCOR PLC", "report dated July 1, 2022", "Form 8-K current report"),
        ("BESTBUY_2024Q2_10Q.pdf", "BEST BUY CO., INC.", "quarterly period ended July 29, 2023",
         "Form 10-Q quarterly report"),
        ("BESTBUY_2017_10K.pdf", "BEST BUY CO., INC.", "fiscal year ended January 28, 2017 (FY2017)",
         "Form 10-K annual report"),
    ],
)
def test_filing_facts_come_from_the_cover_page(filings: Path, name: str, issuer: str, period: str, form: str) -> None:
    facts = facts_of(filings / name)
    assert (facts.issuer, facts.period, facts.form) == (issuer, period, form)
    assert facts.parts()[:3] == [issuer, period, form]


def test_release_without_a_cover_page_keeps_its_title_and_fiscal_year(filings: Path) -> None:
    facts = facts_of(filings / "AMCOR_2023Q4_EARNINGS.pdf")
    assert facts.issuer is None and facts.form is None
    assert facts.period == "fiscal 2023 (FY2023)"  # from the headline "Amcor reports fiscal 2023 results ..."
    assert facts.title is not None and "Amcor" in facts.title  # the PDF's metadata title


def test_titles_of_documents_that_are_not_filings(born_digital: Path) -> None:
    # metadata title; no metadata title: the first page's largest text (small capitals joined, the arXiv
    # stamp in the margin ignored); neither: the file name, made readable
    assert facts_of(born_digital / "ki67_breast_cancer_mdpi.pdf").title.startswith("Ki67 in Breast Cancer Assay")
    assert facts_of(born_digital / "qwen2_technical_report.pdf").title == "QWEN2 TECHNICAL REPORT"
    assert facts_of(born_digital / "financial_statement_notes.pdf").title == "financial statement notes"
    assert facts_of(born_digital / "irs_form_1040_2025.pdf").title == "2025 Form 1040"  # "Form W-2" is no cover


def test_every_born_digital_pdf_gets_a_title_and_no_invented_issuer(born_digital: Path) -> None:
    for path in sorted(born_digital.glob("*.pdf")):
        facts = facts_of(path)
        assert facts.title, path.name
        assert facts.issuer is None and facts.form is None, (path.name, facts)


def test_readable_file_name() -> None:
    assert readable_file_name("s3://b/reports/annual_report-2018.v2.pdf") == "annual report 2018 v2"


def test_compose_cuts_parts_to_the_budget() -> None:
    facts = ["ACME CORP", "fiscal year ended June 30, 2020 (FY2020)", "Form 10-K annual report"]
    headings = ["Consolidated Statements of Cash Flows", "Investing activities"]
    full = compose(facts, headings, 41, 60, whitespace_token_counter)
    assert full == ("ACME CORP | fiscal year ended June 30, 2020 (FY2020) | Form 10-K annual report | "
                    "Consolidated Statements of Cash Flows | Investing activities | page 42")
    for budget in (8, 12, 20, 30):
        short = compose(facts, headings, 41, budget, whitespace_token_counter)
        words = short.split()
        assert len(words) <= budget  # words + " | " separators, one token each here
        assert short.startswith("ACME CORP")


def one_file_subset(src: Path, pages: list[int], dest: Path) -> Path:
    """A PDF of some pages of ``src`` (the cover first), with its metadata."""
    with pymupdf.open(src) as doc:
        out = pymupdf.open()
        for p in pages:
            out.insert_pdf(doc, from_page=p, to_page=p)
        out.set_metadata(doc.metadata)
        out.save(dest)
    return dest


@pytest.fixture(scope="module")
def statement_extract(filings: Path, tmp_path_factory: pytest.TempPathFactory, minilm_counter):
    # the cover, pages of the notes (so that running headers repeat), and the income statement page
    pages = [0, 1, *range(60, 70), 55]
    pdf = one_file_subset(filings / "3M_2018_10K.pdf", pages, tmp_path_factory.mktemp("ctx") / "3m_part.pdf")
    result = extract_document(pdf, f"file://{pdf}", SHA, Settings(page_render_px=0), minilm_counter)
    return result, len(pages) - 1


def test_chunks_carry_issuer_period_headings_and_page(statement_extract) -> None:
    result, statement_page = statement_extract
    assert result.failures == []
    chunks = [it for it in result.items if it.kind == "chunk" and it.page == statement_page]
    assert chunks
    for chunk in chunks:
        ctx = chunk.context
        assert ctx.startswith("3M COMPANY | fiscal year ended December 31, 2018 (FY2018) | Form 10-K annual report")
        assert "Consolidated Statement of Incom" in ctx  # the statement's heading (the PDF splits "Incom e")
        assert "Table of Contents" not in ctx  # a running header, on every page
    assert any(c.context.endswith(f"page {statement_page + 1}") for c in chunks)


def test_context_stays_within_budget_and_the_encoder_window(statement_extract, minilm_counter) -> None:
    from transformers import AutoTokenizer

    result, _ = statement_extract
    settings = Settings()
    tok = AutoTokenizer.from_pretrained(resolve_text_model(settings.text_model))
    chunks = [it for it in result.items if it.kind == "chunk"]
    for chunk in chunks:
        assert sum(minilm_counter(chunk.context.split())) <= settings.chunk_context_tokens  # "|" counted too
        n = len(tok(chunk.indexed_text())["input_ids"])  # with [CLS] and [SEP]
        assert n <= 256, (n, chunk.indexed_text()[:200])


def test_raw_text_is_kept_for_display_and_context_is_indexed(statement_extract) -> None:
    result, _ = statement_extract
    chunk = next(it for it in result.items if it.kind == "chunk" and it.context)
    assert chunk.context not in chunk.text
    ids, texts = text_inputs(result.items, with_context=True)  # chunk_context_embedded
    assert texts[list(ids).index(chunk.id)] == f"{chunk.context}\n{chunk.text}"
    ids, texts = text_inputs(result.items)  # the default: the text space embeds the raw text
    assert texts[list(ids).index(chunk.id)] == chunk.text
    table = items_to_table(result.items)
    row = table.filter(table.column("id").to_numpy() == chunk.id).to_pylist()[0]
    assert row["text"] == chunk.text and row["context"] == chunk.context


def test_context_off_leaves_chunks_as_they_were(filings: Path, tmp_path: Path) -> None:
    pdf = one_file_subset(filings / "3M_2018_10K.pdf", [0, 55], tmp_path / "two.pdf")
    on = extract_document(pdf, "u", SHA, Settings(page_render_px=0, table_structure=False), whitespace_token_counter)
    off = extract_document(pdf, "u", SHA, Settings(page_render_px=0, table_structure=False, chunk_context=False),
                           whitespace_token_counter)
    assert [it.text for it in on.items if it.kind != "outline"] == [it.text for it in off.items]
    assert any(it.kind == "outline" for it in on.items)
    assert all(it.context is None and it.kind != "outline" for it in off.items)  # no context: no outline either
    assert text_inputs(off.items)[1] == [it.text for it in off.items if it.kind == "chunk" and it.text.strip()]


def test_statement_page_gets_one_outline_of_facts_and_headings(statement_extract, minilm_counter) -> None:
    result, statement_page = statement_extract
    outlines = [it for it in result.items if it.kind == "outline"]
    on_page = [it for it in outlines if it.page == statement_page]
    assert len(on_page) == 1
    outline = on_page[0].text
    assert outline.startswith("3M COMPANY | fiscal year ended December 31, 2018 (FY2018) | Form 10-K annual report | ")
    assert "Consolidated Statement of Incom" in outline and "Table of Contents" not in outline
    assert f"page {statement_page + 1}" not in outline  # a page number says nothing of the topic
    assert on_page[0].context is None and on_page[0].bbox is not None
    chunk_pages = {it.page for it in result.items if it.kind == "chunk"}
    assert {it.page for it in outlines} <= chunk_pages  # only pages with chunks, one outline each
    assert len({it.page for it in outlines}) == len(outlines)
    settings = Settings()
    assert all(sum(minilm_counter(it.text.split())) <= settings.chunk_tokens for it in outlines)
    ids, texts = text_inputs(result.items)  # embedded in the text space as their own text
    assert texts[list(ids).index(on_page[0].id)] == outline


def test_page_outline_off_gives_no_outline_items(filings: Path, tmp_path: Path) -> None:
    pdf = one_file_subset(filings / "3M_2018_10K.pdf", [0, 55], tmp_path / "two.pdf")
    off = extract_document(pdf, "u", SHA, Settings(page_render_px=0, page_outline=False), whitespace_token_counter)
    assert off.items and all(it.kind != "outline" for it in off.items)
    assert any(it.context for it in off.items)  # the chunks' context stays


def test_outline_of_a_page_without_headings_is_none() -> None:
    from mmrag_core.ingest.extract.context.page_context import PageContext
    from mmrag_core.ingest.extract.context.page_headings import Heading

    facts = ["ACME CORP", "Form 10-K annual report"]
    assert PageContext(facts, [], 3, 40, whitespace_token_counter).outline(200) is None
    heads = [Heading(10.0, "Balance Sheet"), Heading(50.0, "Assets"), Heading(90.0, "Balance Sheet")]
    assert (PageContext(facts, heads, 3, 40, whitespace_token_counter).outline(200)
            == "ACME CORP | Form 10-K annual report | Balance Sheet | Assets")  # repeats once, no page number
    short = PageContext(facts, heads, 3, 40, whitespace_token_counter).outline(8)
    assert short.startswith("ACME CORP | Form 10-K annual report") and len(short.split()) <= 8  # "|" counted


@pytest.mark.parametrize("change", [{"chunk_context": not Settings().chunk_context}, {"chunk_context_tokens": 24},
                                    {"page_outline": not Settings().page_outline},
                                    {"table_structure": not Settings().table_structure},
                                    {"chunk_context_embedded": not Settings().chunk_context_embedded}])
def test_changing_the_setting_invalidates_stored_records(change: dict) -> None:
    models = {"text": {"name": "all-MiniLM-L6-v2", "weights_sha256": {"model.safetensors": "0" * 64}, "dim": 384}}
    assert record_key(models, Settings(**change)) != record_key(models, Settings())
    assert config_key(Settings(**change)) != config_key(Settings())
