"""The extractive answerer: statement rows, columns and units read off real filings, each calculation
against hand-computed values, abstention when the value is absent, and the answer judge on crafted cases."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmrag_core.answer.extractive import SourcePage, answer_extractively
from mmrag_core.answer.extractive.calculations import METRICS, Plan, evaluate, read_question
from mmrag_core.answer.extractive.vocabulary import find_item, normalise_label
from mmrag_core.eval.answer_judge import judge, parse_quantity
from mmrag_core.answer.extractive.statement_rows import parse_amount, parse_rows, read_page


@pytest.fixture(scope="module")
def filings(test_data: Path) -> Path:
    return test_data


def _pdf(root: Path, split: str, name: str) -> str:
    path = root / f"financebench-{split}" / "pdfs" / f"{name}.pdf"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return str(path)


# ---- rows, columns and units on real statement pages ----

def test_cash_flow_row_column_and_scale(filings: Path) -> None:
    page = read_page(1, _pdf(filings, "dev", "3M_2018_10K"), 59)
    assert page.kind == "cashflow" and page.scale == 1e6
    capex = find_item([page], "capex", 2018)
    assert capex is not None and capex.value == 1577 and capex.cell == "(1,577)"
    assert "Purchases of property, plant and equipment" in capex.row.line
    assert find_item([page], "capex", 2016).value == 1420
    assert find_item([page], "cfo", 2017).value == 6240


def test_balance_sheet_in_thousands(filings: Path) -> None:
    page = read_page(1, _pdf(filings, "train", "ADOBE_2015_10K"), 58)
    assert page.kind == "balance" and page.scale == 1e3
    assert find_item([page], "current_assets", 2015).value == 4821892
    assert find_item([page], "current_assets", 2014).value == 4602328


def test_columns_without_year_headers_follow_the_page_order(filings: Path) -> None:
    """Lockheed 2022: the first row's amounts form one cell and the headers above are years only."""
    page = read_page(1, _pdf(filings, "train", "LOCKHEEDMARTIN_2022_10K"), 62)
    revenue = {y: find_item([page], "revenue", y).value for y in (2020, 2021, 2022)}
    assert revenue == {2020: 65398, 2021: 67044, 2022: 65984}


def test_wrapped_label_and_attributable_net_income(filings: Path) -> None:
    page = read_page(1, _pdf(filings, "train", "COCACOLA_2017_10K"), 73)
    found = find_item([page], "net_income", 2017)
    assert found is not None and found.value == 1248
    assert "ATTRIBUTABLE TO SHAREOWNERS" in found.row.label


def test_balance_item_is_not_read_off_the_cash_flow_statement(filings: Path) -> None:
    cash_flow = read_page(1, _pdf(filings, "dev", "3M_2018_10K"), 59)
    assert find_item([cash_flow], "inventory", 2018) is None  # "Inventories | (509)" is a change
    balance = read_page(2, _pdf(filings, "dev", "3M_2018_10K"), 57)
    assert find_item([cash_flow, balance], "ppe_net", 2018).value == 8738


def test_amounts_and_labels() -> None:
    assert parse_amount("$ (1,577)") == -1577 and parse_amount("—") == 0 and parse_amount("12.3%") == 12.3
    assert parse_amount("16,865.2") == 16865.2 and parse_amount("Net sales") is None
    assert normalise_label("Net cash provided by (used in) operating activities") == \
        "net cash provided by operating activities"
    assert normalise_label("Property, plant and equipment — net") == "property plant and equipment net"
    rows = parse_rows(["(Millions) | 2018 | 2017", "Net sales | 2018: $ 32,765 | 2017: $ 31,657"])
    assert len(rows) == 1 and rows[0].values[2017] == ("$ 31,657", 31657.0)


# ---- calculations against hand-computed values ----

_BOOK = {
    ("revenue", 2019): 1000.0, ("revenue", 2018): 800.0, ("revenue", 2017): 640.0,
    ("cogs", 2019): 600.0, ("cogs", 2018): 500.0, ("cogs", 2017): 400.0,
    ("gross_profit", 2019): 400.0, ("operating_income", 2019): 150.0, ("operating_income", 2018): 100.0,
    ("net_income", 2019): 80.0, ("da", 2019): 50.0, ("capex", 2019): 30.0, ("cfo", 2019): 200.0,
    ("dividends", 2019): 20.0, ("inventory", 2019): 120.0, ("inventory", 2018): 100.0,
    ("accounts_payable", 2019): 90.0, ("accounts_payable", 2018): 70.0,
    ("accounts_receivable", 2019): 110.0, ("accounts_receivable", 2018): 90.0,
    ("total_assets", 2019): 2100.0, ("total_assets", 2018): 1900.0, ("ppe_net", 2019): 450.0,
    ("ppe_net", 2018): 350.0, ("current_assets", 2019): 500.0, ("current_liabilities", 2019): 400.0,
    ("income_tax", 2019): 21.0, ("pretax_income", 2019): 100.0,
}


def _get(item: str, year: int) -> float:
    if (item, year) not in _BOOK:
        raise LookupError(f"{item} {year}")
    return _BOOK[(item, year)]


@pytest.mark.parametrize(("metric", "expected"), [
    ("gross_margin", 0.4), ("operating_margin", 0.15), ("net_margin", 0.08), ("ebitda", 200.0),
    ("ebitda_margin", 0.2), ("da_margin", 0.05), ("capex_to_revenue", 0.03), ("fcf", 170.0),
    ("working_capital", 100.0), ("current_ratio", 1.25), ("quick_ratio", 0.95), ("ocf_ratio", 0.5),
    ("inventory_turnover", 600 / 110), ("asset_turnover", 0.5), ("fixed_asset_turnover", 2.5),
    ("roa", 0.04), ("retention_ratio", 0.75), ("payout_ratio", 0.25), ("effective_tax_rate", 0.21),
    ("dpo", 365 * 80 / 620), ("dio", 365 * 110 / 600), ("dso", 365 * 100 / 1000),
    ("ccc", 365 * 110 / 600 + 365 * 100 / 1000 - 365 * 80 / 620), ("fcf_conversion", 170 / 80),
])
def test_metric_by_hand(metric: str, expected: float) -> None:
    assert METRICS[metric].fn(_get, 2019) == pytest.approx(expected)


def test_growth_average_and_cagr() -> None:
    yoy = evaluate(Plan("revenue", "yoy", (2018, 2019), True, 1, ""), _get)[0]
    assert yoy == pytest.approx(0.25)
    cagr = evaluate(Plan("revenue", "cagr", (2017, 2019), True, 1, ""), _get)[0]
    assert cagr == pytest.approx(0.25)
    avg = evaluate(Plan("cogs_to_revenue", "average", (2017, 2018, 2019), True, 1, ""), _get)[0]
    assert avg == pytest.approx((0.625 + 0.625 + 0.6) / 3)
    with pytest.raises(LookupError):
        evaluate(Plan("roa", "value", (2018,), False, 2, ""), _get)


def test_reading_questions() -> None:
    plan = read_question("What is Amazon's FY2017 days payable outstanding (DPO)? DPO is defined as: 365 * (average "
                         "accounts payable between FY2016 and FY2017) / (FY2017 COGS + change in inventory between "
                         "FY2016 and FY2017). Round your answer to two decimal places.")
    assert plan == Plan("dpo", "value", (2017,), False, 2, "")
    plan = read_question("What is the FY2017 - FY2019 3 year average of capex as a % of revenue for Activision "
                         "Blizzard? Answer in units of percents and round to one decimal place.")
    assert plan == Plan("capex_to_revenue", "average", (2017, 2018, 2019), True, 1, "")
    plan = read_question("How much (in USD billions) did American Water Works pay out in cash dividends for FY2020?")
    assert plan is not None and (plan.metric, plan.scale_word) == ("dividends", "billion")
    assert read_question("What industry does AMCOR primarily operate in?") is None


# ---- end to end, and abstention ----

def test_answer_cites_the_row(filings: Path) -> None:
    pdf = _pdf(filings, "dev", "3M_2018_10K")
    sources = [SourcePage(pdf, 10), SourcePage(pdf, 59)]
    ans = answer_extractively("What is the FY2018 capital expenditure amount (in USD millions) for 3M?", sources)
    assert not ans.abstained and ans.value == 1577 and ans.unit == "USD millions"
    assert ans.citations == (2,) and ans.page == 59 and "(1,577)" in (ans.quote or "")
    assert "[2]" in ans.text


def test_abstains_when_no_source_states_the_value(filings: Path) -> None:
    pdf = _pdf(filings, "dev", "3M_2018_10K")
    sources = [SourcePage(pdf, 10), SourcePage(pdf, 57)]  # business overview and balance sheet: no capex
    ans = answer_extractively("What is the FY2018 capital expenditure amount (in USD millions) for 3M?", sources)
    assert ans.abstained and ans.value is None and ans.inputs == ()
    assert "do not state" in ans.text and ans.closest
    ans = answer_extractively("What is the FY2009 capital expenditure for 3M?", [SourcePage(pdf, 59)])
    assert ans.abstained  # the page has the row, not the year
    ans = answer_extractively("What industry does 3M operate in?", [SourcePage(pdf, 59)])
    assert ans.abstained and ans.value is None


def test_verdict_from_two_years(filings: Path) -> None:
    pdf = _pdf(filings, "dev", "AMCOR_2023_10K")
    ans = answer_extractively("Does AMCOR have an improving gross margin profile as of FY2023?", [SourcePage(pdf, 49)])
    assert ans.label == "No" and {cv.year for cv in ans.inputs} == {2022, 2023}


# ---- the judge ----

@pytest.mark.parametrize(("question", "reference", "answer", "unit", "correct"), [
    ("net PPNE? Answer in USD billions.", "$8.70", "8.74 USD billions [3]", "USD billions", True),
    ("net PPNE? Answer in USD billions.", "$8.70", "8.76 USD billions", "USD billions", False),
    ("capex (in USD millions)?", "$1577.00", "1,577 USD millions [5]", "USD millions", True),
    ("capex (in USD millions)?", "$1577.00", "$1.577 billion", None, True),
    ("capex (in USD millions)?", "$1577.00", "1,578 USD millions", "USD millions", False),
    ("Round to two decimal places.", "24.26", "fixed asset turnover: 24.26 [6, 5]", "", True),
    ("Round to two decimal places.", "24.26", "fixed asset turnover: 24.27", "", False),
    ("margin in percents", "1.9%", "capex to revenue (FY2017-FY2019): 1.9% [4]", "%", True),
    ("margin in percents", "1.9%", "ratio 0.019", "", True),
    ("ROA, round to two decimals", "0.01", "roa: 1.4%", "%", True),
    ("CCC?", "-3.7", "ccc: -3.68 days", "days", True),
    ("Does Adobe have an improving margin?", "No the operating margins declined", "No. margin went down", "", True),
    ("Does Adobe have an improving margin?", "Yes, it improved", "No. margin went down", "", False),
    ("Has the quick ratio improved or declined?", "The quick ratio has slightly improved from 0.67",
     "Improved. quick ratio went up", "", True),
    ("Among operations, investing, and financing activities, which brought in the most?",
     "Best Buy generated the most cash flow from operating activities", "Operating activities.", "", True),
    ("Among operations, investing, and financing activities, which brought in the most?",
     "Best Buy generated the most cash flow from operating activities", "Financing activities.", "", False),
    ("What was Adj. EBITDA?", "AMCOR's Adj. EBITDA was $2,018mn in FY 2023",
     "AMCOR's Adj. EBITDA was 2,018 million", "", True),
])
def test_judge(question: str, reference: str, answer: str, unit: str | None, correct: bool) -> None:
    assert judge(question, reference, answer, answer_unit=unit).correct is correct


def test_judge_never_credits_an_abstention() -> None:
    assert not judge("q", "$1577.00", "1577", abstained=True).correct
    q = parse_quantity("FY2018 capex: $1,577 million", 1.0)
    assert q is not None and q.value == 1.577e9
