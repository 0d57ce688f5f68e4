"""One answer checker for every suite: find the final answer, then compare meanings.

``extract_answer`` finds what a response commits to (``\\boxed{}``, "Final Answer:", "Answer:",
else the last equation or number). ``answers_match`` compares it with a reference: as math
(sympy values and root sets, see ``tasks.mathparse``), as a chemical formula (subscripts in any
notation, case-sensitive), or as a short text fact (aliases, accents and articles ignored, found
in the answer or the response's opening sentence). Close-but-wrong answers fail by design.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from tasks.mathparse import ParseTimeout, parse_values, time_limit, value_sets_equal

__all__ = ["answers_match", "extract_answer", "reference_kind"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_SECONDS_PER_CHECK = 6.0
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>")
_MARKER = re.compile(
    r"(?:\*\*|#+\s*)?\b(?:final\s+answer|answer)\b\s*(?:\*\*)?\s*(?::|is\b|=)\s*(?:\*\*)?"
    r"|\*\*\s*(?:final\s+)?answer\s*\*\*",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?")
_MATH_NAMES = re.compile(
    r"\\[A-Za-z]+|\b(?:sqrt|sin|cos|tan|cot|sec|csc|log|ln|exp|pi|oo|or|and|dx)\b"
)
_FORMULA = re.compile(r"^(?:[A-Z][a-z]?\d*|\((?:[A-Z][a-z]?\d*)+\)\d*)+$")
_ELEMENTS = frozenset(
    _words(
        "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge "
        "As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pt Au Hg "
        "Tl Pb Bi Po At Rn Fr Ra U Pu W"
    )
)


def _boxed(text: str) -> list[tuple[int, str]]:
    """(position, content) of every ``\\boxed{...}`` / ``\\fbox{...}``, braces balanced."""
    found = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for pos in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth == 0:
                found.append((match.start(), text[start:pos]))
                break
    return found


def _clean_response(response: str) -> str:
    if "</think>" in response:
        response = response.rsplit("</think>", 1)[1]
    return _SPECIAL.sub("", _THINK.sub("", response)).strip()


def _after_marker(text: str, end: int) -> str:
    """The answer following a marker: the rest of its line, else the next paragraph."""
    rest = text[end:].lstrip(" \t*:")
    line, _, after = rest.partition("\n")
    if line.strip(" *$:") == "":
        paragraph = after.strip().split("\n\n")[0]
        return paragraph.strip()
    if line.count("$$") == 1:  # display math opened on the marker line
        return (line + "\n" + after.split("$$")[0] + "$$").strip()
    return re.split(r"(?<![0-9])\.\s+(?=[A-Z])", line.strip())[0]


def extract_answer(response: str) -> str | None:
    """The final answer a response commits to, as written, or None for an empty response.

    Order: the last ``\\boxed{}`` (several on that line are joined: one per root), the text after
    the last "Final Answer:"/"Answer:"/"the answer is", the last line with an equation or a
    display block, the last number.
    """
    text = _clean_response(response)
    if not text:
        return None
    boxes = _boxed(text)
    if boxes:
        last_line_start = text.rfind("\n", 0, boxes[-1][0]) + 1
        same_line = [content for pos, content in boxes if pos >= last_line_start]
        return ", ".join(c.strip() for c in same_line)
    markers = list(_MARKER.finditer(text))
    if markers:
        answer = _after_marker(text, markers[-1].end()).strip()
        if answer:
            return answer.strip("* ").rstrip(".").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "=" in line or line.startswith(("$$", "\\[")) or re.search(r"\d", line):
            return line
    return lines[-1]


_ONES = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
)
_TENS = _words("twenty thirty forty fifty sixty seventy eighty ninety")
_WORD_VALUE = {w: i for i, w in enumerate(_ONES)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}


def _number_words_to_digits(text: str) -> str:
    """'two hundred and six' -> '206', 'eight' -> '8' (up to the thousands)."""
    words = "|".join([*_WORD_VALUE, "hundred", "thousand"])
    pattern = re.compile(rf"\b(?:{words})(?:(?:\s+|-|\s+and\s+)(?:{words}))*\b", re.IGNORECASE)

    def repl(match: re.Match[str]) -> str:
        total, current = 0, 0
        for word in re.split(r"\s+and\s+|\s+|-", match.group(0).lower()):
            if word == "hundred":
                current = max(current, 1) * 100
            elif word == "thousand":
                total, current = total + max(current, 1) * 1000, 0
            else:
                current += _WORD_VALUE[word]
        return str(total + current)

    return pattern.sub(repl, text)


def _fold(text: str) -> str:
    """Lowercase, strip accents, markdown, punctuation and articles for text comparison."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    text = re.sub(r"[^a-z0-9\s-]", " ", text).replace("-", " ")
    text = re.sub(r"\b(?:the|a|an)\b", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _formula_text(text: str) -> str:
    """Chemical formulas in any notation -> plain 'H2O' (subscripts, LaTeX, HTML)."""
    text = unicodedata.normalize("NFKC", text)  # ₂ -> 2
    text = re.sub(r"</?sub>", "", text)
    text = re.sub(r"\\(?:text|mathrm|ce|rm)\s*\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"_\{?(\d+)\}?", r"\1", text)
    return text.replace("$", "").replace("{", "").replace("}", "")


def reference_kind(reference: str) -> str:
    """'formula' (H2O, Au), 'math' (numbers, expressions, root sets) or 'text' (Paris)."""
    plain = _formula_text(reference).strip()
    if _FORMULA.match(plain):
        tokens = re.findall(r"[A-Z][a-z]?", plain)
        if all(t in _ELEMENTS for t in tokens):  # 'O' and 'Au' are symbols, 'H2O' a formula
            return "formula"
    without_math = _MATH_NAMES.sub(" ", reference)
    if re.search(r"[A-Za-z]{2,}", without_math):
        return "text"
    return "math"


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[a-z0-9)\]])[.!?](?:\s|$)|\n", text.strip(), maxsplit=1)[0]


def _regions(response: str, answer: str | None) -> list[str]:
    """Where a fact may be stated: the committed answer, else the opening or a short reply."""
    text = _clean_response(response)
    has_commitment = bool(_boxed(text) or _MARKER.search(text))
    if has_commitment and answer:
        return [answer]
    regions = [_first_sentence(text)]
    if len(text.split()) <= 40:
        regions.append(text)
    return regions


def _text_match(regions: list[str], reference: str) -> bool:
    target = _fold(reference)
    if not target:
        return False
    pattern = re.compile(rf"(?<![a-z0-9]){re.escape(target)}(?![a-z0-9])")
    return any(pattern.search(_fold(region)) for region in regions)


def _formula_match(regions: list[str], reference: str) -> bool:
    target = _formula_text(reference).strip()
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(target)}(?![a-z0-9])")
    return any(pattern.search(_formula_text(region)) for region in regions)


def _math_match(response: str, answer: str | None, reference: str) -> bool:
    expected = parse_values(reference)
    if not expected:
        return False
    if answer is not None and value_sets_equal(parse_values(answer), expected):
        return True
    text = _clean_response(response)
    if len(expected) != 1 or answer is None or _boxed(text) or _MARKER.search(text):
        return False
    # No committed answer: the last number of the last line, or a number stated in an
    # opening sentence of prose ("It ended in 1945, when Japan surrendered on September 2.").
    numbers = _NUMBER.findall(answer)
    if numbers and value_sets_equal(parse_values(numbers[-1]), expected):
        return True
    if "=" in text:
        return False
    sentence = _number_words_to_digits(_first_sentence(text))
    return any(value_sets_equal(parse_values(n), expected) for n in _NUMBER.findall(sentence))


def answers_match(response: str, reference: str, aliases: Sequence[str] = ()) -> bool:
    """Whether ``response`` gives the same final answer as ``reference`` (or one of ``aliases``).

    >>> answers_match("**Answer:** $x = 8$ or $x = -6$", "-6, 8")
    True
    >>> answers_match("The answer is 7 + √37", "7 \\\\pm \\\\sqrt{38}")
    False
    """
    if not response or not response.strip():
        return False
    try:
        with time_limit(_SECONDS_PER_CHECK):
            return _answers_match(response, reference, aliases)
    except ParseTimeout:
        return False


def _answers_match(response: str, reference: str, aliases: Sequence[str]) -> bool:
    answer = extract_answer(response)
    for ref in (reference, *aliases):
        if not ref or not str(ref).strip():
            continue
        ref = str(ref).strip()
        kind = reference_kind(ref)
        if kind == "math":
            spelled = _number_words_to_digits(answer) if answer else answer
            if _math_match(response, spelled, ref):
                return True
        elif kind == "formula":
            if _formula_match(_regions(response, answer), ref):
                return True
        elif _text_match(_regions(response, answer), ref):
            return True
    return False
