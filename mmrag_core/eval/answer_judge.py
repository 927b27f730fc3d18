"""A judge of answers against reference answers: numbers after unit and scale normalisation within the
reference's rounding, yes/no by polarity, a named option by which option is named, text by stated rules.

String equality undercounts ("$8.74 billion" is "$8.70" rounded) and an LLM judge is neither offline nor
repeatable; these rules are both, and each verdict says which rule decided it.

Rules. Number: the reference's first number, its scale ("billion", "mn", or the question's "in USD millions")
and percent sign; tolerance half a unit of its last non-zero decimal (FinanceBench prints every dollar amount
with ".00", so trailing zeros carry no precision); a percent compared with a ratio by x100. Yes/no: the
reference begins with yes or no; the answer must begin with the same word. Option: the question offers
options ("improved or declined", "operating, investing, and financing"); the answer must name the one the
reference names first and no other. Text: every number of the reference's first sentence in the answer and
half of its content words. An abstention is never correct.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = re.compile(r"(-)?\$?\s*(-)?\(?(\d[\d,]*(?:\.\d+)?)\)?\s*"
                  r"(%|percent|(?:bn|billion|mn|million|m|thousand|k)\b)?", re.I)
_SCALE = {"bn": 1e9, "billion": 1e9, "mn": 1e6, "million": 1e6, "m": 1e6, "thousand": 1e3, "k": 1e3}
_OPTIONS = (("improv", "declin"), ("increas", "decreas"), ("oper", "invest", "financ"))
_STOP = set("the a an of in to and or for by from is was were has have had its their this that with as on at be"
            " it which than between".split())


@dataclass(frozen=True)
class Quantity:
    value: float  # in absolute units (a percent stays in percent points)
    percent: bool
    half_unit: float  # the reference's rounding, in absolute units


@dataclass(frozen=True)
class Judgement:
    correct: bool
    rule: str  # number / polarity / option / text / abstained / unparsed
    detail: str


def _half_unit(digits: str) -> float:
    if "." not in digits:
        return 0.5
    decimals = digits.split(".")[1].rstrip("0")
    return 0.5 * 10 ** -len(decimals)


def question_scale(question: str) -> float:
    """The money scale a question asks for ("in USD millions" -> 1e6), 1.0 when none."""
    m = re.search(r"\b(thousand|million|billion)s?\b", question.lower())
    return _SCALE[m.group(1)] if m else 1.0


def parse_quantity(text: str, default_scale: float = 1.0) -> Quantity | None:
    """The first number of ``text`` (not a year or a fiscal-year label) with its percent sign and scale."""
    for m in _NUM.finditer(text):
        neg1, neg2, digits, suffix = m.groups()
        start = m.start(3)
        if re.fullmatch(r"(?:19|20)\d{2}", digits) and not suffix and "$" not in m.group(0):
            continue
        if text[max(0, start - 2):start].upper().endswith(("FY", "Q")) or text[max(0, start - 1):start] == "[":
            continue
        value = float(digits.replace(",", ""))
        if neg1 or neg2 or (m.group(0).strip().startswith("(") and m.group(0).strip().endswith(")")):
            value = -value
        suffix = (suffix or "").lower()
        percent = suffix in ("%", "percent")
        scale = 1.0 if percent else _SCALE.get(suffix, default_scale)
        return Quantity(value * scale, percent, _half_unit(digits) * scale)
    return None


def _polarity(text: str) -> str | None:
    m = re.match(r"\W*(yes|no)\b", text.strip().lower())
    return m.group(1) if m else None


def _options_named(text: str, options: tuple[str, ...]) -> list[str]:
    low = text.lower()
    found = [(low.find(o), o) for o in options if o in low]
    return [o for _, o in sorted(found)]


def _words(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]{3,}", text.lower()) if w not in _STOP}


def judge(question: str, reference: str, answer: str, abstained: bool = False,
          answer_unit: str | None = None) -> Judgement:
    """Whether ``answer`` (its text; ``answer_unit`` as 'USD millions' / '%' / '' when known) agrees with
    ``reference`` for ``question`` under the rules of this module."""
    if abstained:
        return Judgement(False, "abstained", "the answer abstains")
    ref_pol = _polarity(reference)
    if ref_pol is not None:
        got = _polarity(answer)
        return Judgement(got == ref_pol, "polarity", f"reference {ref_pol}, answer {got}")
    q = question.lower()
    for options in _OPTIONS:
        if sum(o in q for o in options) >= 2:
            named = _options_named(reference, options)
            if named:
                got = _options_named(answer, options)
                ok = bool(got) and got[0] == named[0] and len(got) == 1
                return Judgement(ok, "option", f"reference names {named[0]}, answer {got}")
    first_sentence = re.split(r"(?<=[a-z%)])\.\s|\n", reference.strip())[0]
    only_number = re.fullmatch(r"\s*-?\$?\s*-?\(?[\d,]+(?:\.\d+)?\)?\s*%?\s*", reference) is not None
    ref_q = parse_quantity(reference, question_scale(question))
    if ref_q is not None and only_number:
        unit_scale = question_scale(answer_unit) if answer_unit else question_scale(question)
        got = parse_quantity(answer, unit_scale)
        if got is None:
            return Judgement(False, "number", "the answer states no number")
        value = got.value
        if ref_q.percent and not got.percent and answer_unit != "%":
            value *= 100
        elif got.percent and not ref_q.percent:
            value /= 100
        ok = abs(value - ref_q.value) <= ref_q.half_unit + 1e-9 * max(1.0, abs(ref_q.value))
        return Judgement(ok, "number", f"reference {ref_q.value:g} ± {ref_q.half_unit:g}, answer {value:g}")
    numbers = [m.group(3).replace(",", "") for m in _NUM.finditer(first_sentence)
               if not re.fullmatch(r"(?:19|20)\d{2}", m.group(3))]
    answer_numbers = {m.group(3).replace(",", "") for m in _NUM.finditer(answer)}
    words = _words(first_sentence)
    overlap = len(words & _words(answer)) / max(1, len(words))
    ok = all(n in answer_numbers for n in numbers) and overlap >= 0.5
    return Judgement(ok, "text", f"numbers {numbers} present: {all(n in answer_numbers for n in numbers)}, "
                     f"word overlap {overlap:.2f}")
