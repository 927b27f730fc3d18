"""Derived financial metrics (margins, turnovers, days outstanding, growth) and the reading of a question
into one: which metric, which fiscal years, and the unit and rounding asked for.

Analysts ask for ratios of statement lines more often than for the lines themselves; each metric here is a
formula over named line items (``fin_vocab``), so every input of an answer is a cited row.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Get = Callable[[str, int], float]  # (line item, fiscal year) -> value in the statement's scale


@dataclass(frozen=True)
class Metric:
    """``kind``: amount (money, in the statement's scale), ratio, percent (computed as a fraction) or days."""

    name: str
    formula: str
    kind: str
    fn: Callable[[Get, int], float]


def _avg(get: Get, item: str, y: int) -> float:
    return (get(item, y) + get(item, y - 1)) / 2


def _dpo(g: Get, y: int) -> float:
    return 365 * _avg(g, "accounts_payable", y) / (g("cogs", y) + g("inventory", y) - g("inventory", y - 1))


def _dio(g: Get, y: int) -> float:
    return 365 * _avg(g, "inventory", y) / g("cogs", y)


def _dso(g: Get, y: int) -> float:
    return 365 * _avg(g, "accounts_receivable", y) / g("revenue", y)


def _gross(g: Get, y: int) -> float:
    try:
        return g("gross_profit", y)
    except LookupError:
        return g("revenue", y) - g("cogs", y)


_M = [
    Metric("ccc", "DIO + DSO - DPO", "days", lambda g, y: _dio(g, y) + _dso(g, y) - _dpo(g, y)),
    Metric("dpo", "365 * avg(accounts payable) / (COGS + change in inventory)", "days", _dpo),
    Metric("dio", "365 * avg(inventory) / COGS", "days", _dio),
    Metric("dso", "365 * avg(accounts receivable) / revenue", "days", _dso),
    Metric("fixed_asset_turnover", "revenue / avg(net PP&E)", "ratio",
           lambda g, y: g("revenue", y) / _avg(g, "ppe_net", y)),
    Metric("inventory_turnover", "COGS / avg(inventory)", "ratio", lambda g, y: g("cogs", y) / _avg(g, "inventory", y)),
    Metric("asset_turnover", "revenue / avg(total assets)", "ratio",
           lambda g, y: g("revenue", y) / _avg(g, "total_assets", y)),
    Metric("roa", "net income / avg(total assets)", "ratio",
           lambda g, y: g("net_income", y) / _avg(g, "total_assets", y)),
    Metric("ocf_ratio", "cash from operations / total current liabilities", "ratio",
           lambda g, y: g("cfo", y) / g("current_liabilities", y)),
    Metric("current_ratio", "total current assets / total current liabilities", "ratio",
           lambda g, y: g("current_assets", y) / g("current_liabilities", y)),
    Metric("quick_ratio", "(total current assets - inventories) / total current liabilities", "ratio",
           lambda g, y: (g("current_assets", y) - g("inventory", y)) / g("current_liabilities", y)),
    Metric("working_capital", "total current assets - total current liabilities", "amount",
           lambda g, y: g("current_assets", y) - g("current_liabilities", y)),
    Metric("retention_ratio", "(net income - dividends paid) / net income", "ratio",
           lambda g, y: (g("net_income", y) - g("dividends", y)) / g("net_income", y)),
    Metric("payout_ratio", "dividends paid / net income", "ratio", lambda g, y: g("dividends", y) / g("net_income", y)),
    Metric("fcf_conversion", "(cash from operations - capex) / net income", "percent",
           lambda g, y: (g("cfo", y) - g("capex", y)) / g("net_income", y)),
    Metric("fcf", "cash from operations - capex", "amount", lambda g, y: g("cfo", y) - g("capex", y)),
    Metric("ebitda_margin", "(operating income + D&A) / revenue", "percent",
           lambda g, y: (g("operating_income", y) + g("da", y)) / g("revenue", y)),
    Metric("ebitda", "operating income + D&A", "amount", lambda g, y: g("operating_income", y) + g("da", y)),
    Metric("da_margin", "D&A / revenue", "percent", lambda g, y: g("da", y) / g("revenue", y)),
    Metric("gross_margin", "gross profit / revenue", "percent", lambda g, y: _gross(g, y) / g("revenue", y)),
    Metric("operating_margin", "operating income / revenue", "percent",
           lambda g, y: g("operating_income", y) / g("revenue", y)),
    Metric("net_margin", "net income / revenue", "percent", lambda g, y: g("net_income", y) / g("revenue", y)),
    Metric("effective_tax_rate", "income tax expense / income before income taxes", "percent",
           lambda g, y: g("income_tax", y) / g("pretax_income", y)),
    Metric("capex_to_revenue", "capex / revenue", "percent", lambda g, y: g("capex", y) / g("revenue", y)),
    Metric("cogs_to_revenue", "COGS / revenue", "percent", lambda g, y: g("cogs", y) / g("revenue", y)),
]
METRICS: dict[str, Metric] = {m.name: m for m in _M}
for _item in ("revenue", "cogs", "gross_profit", "operating_income", "net_income", "da", "capex", "cfo", "cfi",
              "cff", "dividends", "ppe_net", "total_assets", "current_assets", "current_liabilities", "inventory",
              "accounts_payable", "accounts_receivable", "cash", "total_liabilities", "equity", "income_tax"):
    METRICS[_item] = Metric(_item, _item, "amount", lambda g, y, i=_item: g(i, y))

# Question wording -> metric, most specific first (a definition later in the question names other items).
_ITEM_WORDS = (
    ("capex", r"capital expenditures?|capex|purchases? of (?:property|pp&e)"),
    ("cogs", r"cost of goods sold|cogs|cost of (?:sales|revenues?)"),
    ("da", r"depreciation (?:and|&) amortization|d&a"),
    ("operating_income", r"operating income|operating profit|income from operations"),
    ("net_income", r"net (?:income|earnings|profit)"),
    ("dividends", r"dividends?"),
    ("revenue", r"revenues?|net sales|top ?line|total sales"),
)
_METRIC_WORDS = (
    ("ccc", r"cash conversion cycle|\bccc\b"), ("dpo", r"days payables? outstanding|\bdpo\b"),
    ("dio", r"days inventory outstanding|\bdio\b"), ("dso", r"days sales outstanding|\bdso\b"),
    ("fixed_asset_turnover", r"fixed asset turnover"), ("inventory_turnover", r"inventory turnover"),
    ("asset_turnover", r"asset turnover"), ("roa", r"return on (?:total )?assets|\broa\b"),
    ("ocf_ratio", r"operating cash flow ratio"),
    ("current_ratio", r"working capital ratio|current ratio"), ("quick_ratio", r"quick ratio|acid[- ]test"),
    ("working_capital", r"working capital"), ("retention_ratio", r"retention ratio"),
    ("payout_ratio", r"payout ratio"), ("fcf_conversion", r"(?:free cash ?flow|fcf) conversion"),
    ("ebitda_margin", r"ebitda (?:% )?margin"), ("da_margin", r"(?:d&a|depreciation and amortization)\b.{0,60}"
                                                 r"% margin"),
    ("fcf", r"free cash ?flow|\bfcf\b"), ("ebitda", r"ebitda"),
    ("gross_margin", r"gross (?:profit )?margin"), ("operating_margin", r"operating (?:profit )?margin"),
    ("net_margin", r"net (?:profit |income )?margin|profit margin"), ("effective_tax_rate", r"effective tax rate"),
    ("ppe_net", r"\bppne\b|pp&e|property,? plant,? (?:and|&) equipment|fixed assets"),
    ("total_current_assets", r"total current assets"), ("current_liabilities", r"total current liabilities"),
    ("inventory", r"inventor(?:y|ies)"), ("accounts_payable", r"accounts payable"),
    ("accounts_receivable", r"accounts receivable|receivables"),
    ("cfo", r"cash (?:flow )?from operations|operating cash flow|cash from operating activities"),
    ("total_assets", r"total assets"), ("cash", r"cash (?:and|&) cash equivalents"),
) + _ITEM_WORDS
_FY = re.compile(r"\b(?:fy|fiscal(?: year)?)\s*'?((?:19|20)\d{2})\b|\b((?:19|20)\d{2})\b", re.I)
_DECIMALS = re.compile(r"round(?:ed)?(?: your answer| the answer| answer)? to (\w+) decimal", re.I)
# A question for a reason or for one of several named parts asks for no single value, even when it names a metric.
_NOT_A_VALUE = re.compile(r"\bwhat (?:drove|caused|explains)\b|\bwhy\b|\bdrivers? of\b|"
                          r"\bwhich (?:of \w+'?s? )?(?:\w+ )?(?:segments?|categor(?:y|ies)|divisions?|products?|"
                          r"business(?:es)?|regions?)\b")
_WORD_NUM = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4}


@dataclass(frozen=True)
class Plan:
    """A question read as a computation: ``mode`` value / average / yoy / cagr over ``years`` (ascending);
    ``percent`` when the answer is asked as a percentage; ``scale_word`` the money unit asked ('million')."""

    metric: str
    mode: str
    years: tuple[int, ...]
    percent: bool
    decimals: int | None
    scale_word: str


def metric_of(q: str) -> str | None:
    """The metric a (lower-cased) question names, most specific first; None when it names none known."""
    head = re.split(r"\b(?:is|are) defined as|\bdefine[sd]?\b", q, maxsplit=1)[0]
    m = re.search(r"(\w[\w& ]*?) as a % of (?:total )?(?:revenue|sales|net sales)", q)
    if m:
        for item, words in _ITEM_WORDS:
            if re.search(words, m.group(1)):
                return {"capex": "capex_to_revenue", "cogs": "cogs_to_revenue", "da": "da_margin",
                        "net_income": "net_margin", "operating_income": "operating_margin"}.get(item)
    for text in (head, q):
        for name, words in _METRIC_WORDS:
            if re.search(words, text):
                return {"total_current_assets": "current_assets"}.get(name, name)
    return None


def read_question(question: str) -> Plan | None:
    """The computation a question asks for, or None when it asks for none this module knows."""
    q = question.lower().replace("’", "'")
    if _NOT_A_VALUE.search(q.split("?")[0]):
        return None
    metric = metric_of(q)
    head = re.split(r"\b(?:is|are) defined as|\bdefine[sd]?\b", q, maxsplit=1)[0]
    years = sorted({int(a or b) for a, b in _FY.findall(head)}) or sorted({int(a or b) for a, b in _FY.findall(q)})
    if metric is None or not years:
        return None
    mode = "value"
    if re.search(r"\bcagr\b|compound annual growth", q):
        mode = "cagr"
    elif re.search(r"year[- ]over[- ]year|\byoy\b|(?:change|growth) in", head) and len(years) >= 2:
        mode = "yoy"
    elif re.search(r"(\w+)[- ]year average|average .{0,60}\bfrom\b", head) and len(years) >= 2:
        mode = "average"
    if mode == "value":
        span: tuple[int, ...] = (years[-1],)
    elif mode == "average":
        span = tuple(range(years[0], years[-1] + 1))
    else:
        span = (years[0], years[-1])
    percent = bool(re.search(r"percent|as a %|in %|%\s*margin|percentage", q)) or mode in ("yoy", "cagr")
    percent = percent or (METRICS[metric].kind == "percent" and not re.search(r"\bratio\b", q))
    dm = _DECIMALS.search(q)
    decimals = None
    if dm:
        word = dm.group(1)
        decimals = int(word) if word.isdigit() else _WORD_NUM.get(word)
    sm = re.search(r"\b(?:usd|\$|dollars?)\s*(thousands|millions|billions)|in (thousands|millions|billions)\b", q)
    scale_word = (sm.group(1) or sm.group(2)).rstrip("s") if sm else ""
    return Plan(metric, mode, span, percent, decimals, scale_word)


def evaluate(plan: Plan, get: Get) -> tuple[float, str]:
    """The plan's value (a fraction for percentages, before unit conversion) and its formula in words.
    Raises LookupError when an input is not stated in the sources."""
    metric = METRICS[plan.metric]
    if plan.mode == "value":
        return metric.fn(get, plan.years[0]), f"{metric.formula} (FY{plan.years[0]})"
    if plan.mode == "average":
        values = [metric.fn(get, y) for y in plan.years]
        return sum(values) / len(values), f"average over FY{plan.years[0]}-FY{plan.years[-1]} of {metric.formula}"
    start, end = (metric.fn(get, y) for y in plan.years)
    if start == 0:
        raise LookupError("growth from zero")
    if plan.mode == "yoy":
        return end / start - 1, f"({metric.formula} FY{plan.years[1]} / FY{plan.years[0]}) - 1"
    n = plan.years[1] - plan.years[0]
    if start < 0 or end < 0 or n <= 0:
        raise LookupError("CAGR of a negative value")
    return (end / start) ** (1 / n) - 1, f"(FY{plan.years[1]} / FY{plan.years[0]})^(1/{n}) - 1 of {metric.formula}"
