"""One answer checker for every suite: find the final answer, then compare meanings.

``extract_answer`` finds what a response commits to (``\\boxed{}``, "Final Answer:", "Answer:",
else the last equation or number). ``judge_answer`` compares it with a reference: as math
(exact rationals first, else sympy values and root sets, see ``tasks.mathparse``), as a chemical
formula (subscripts in any notation, case-sensitive), or as a short text fact (aliases, accents
and articles ignored, found in the answer or the response's opening sentence). Close-but-wrong
answers fail by design.

A fact counts only where the reply asserts it: a mention with a negation cue shortly before it in
the same clause ("is not Paris", "rather than Paris"), or followed by "is not", is a denial. A
comparison that runs out of time is "unscored": neither credited nor counted wrong, so no figure
depends on how busy the machine was.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from tasks.mathparse import (
    ParseTimeout,
    exact_sets_equal,
    exact_values,
    parse_values,
    time_limit,
    value_sets_equal,
)

__all__ = ["Verdict", "answers_match", "extract_answer", "judge_answer", "reference_kind"]

Verdict = Literal["correct", "wrong", "unscored"]
_T = TypeVar("_T")


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


# Negation: a cue among the few words before a mention, in its clause, makes it a denial.
_NEGATION_WINDOW = 4
_NEGATIONS = frozenset(_words("not no never neither nor"))
_NEGATION_PAIRS = frozenset({("rather", "than"), ("instead", "of"), ("other", "than")})
_NOT_A_DENIAL = frozenset(_words("only just doubt"))  # "not only Paris", "no doubt Paris"
_COPULAS = frozenset(_words("is was are were does did do has have had will would"))
_CLAUSE_BREAK = re.compile(
    r"[,;:.!?()\[\]\u2013\u2014]|\b(?:but|however|although|though|whereas)\b", re.IGNORECASE
)
_CONTRACTION = re.compile(r"n['\u2019]t\b", re.IGNORECASE)  # isn't, wasn't, can't, won't
_FUSED_NOT = re.compile(r"\b(is|was|are|were|does|did|do|has|have|had|can)(?:nt|not)\b", re.I)
_ARTICLES = frozenset(_words("the a an"))
_TEXT_WRAPPER = re.compile(r"\\text\{([^}]*)\}")


def _fact_words(text: str) -> list[tuple[str, int, int]]:
    """Folded words of ``text`` with their spans: accents, case and articles dropped."""
    words = []
    for match in re.finditer(r"[^\W_]+", text):
        plain = unicodedata.normalize("NFKD", match.group(0))
        plain = "".join(c for c in plain if not unicodedata.combining(c)).lower()
        for word in re.findall(r"[a-z0-9]+", plain):
            if word not in _ARTICLES:
                words.append((word, match.start(), match.end()))
    return words


def _prepare(text: str) -> str:
    """Unwrap ``\\text{}`` and spell out "n't" ("isn't" -> "is not") for the negation cues."""
    text = _CONTRACTION.sub(" not", _TEXT_WRAPPER.sub(r"\1", text))
    return _FUSED_NOT.sub(r"\1 not", text)


def _asserted(before: str, after: str) -> bool:
    """Whether a mention between ``before`` and ``after`` is asserted, not denied.

    Denied: a negation cue among the ``_NEGATION_WINDOW`` words before it in its clause ("is not
    Paris", "isn't Paris", "rather than Paris", "instead of Paris"), or the mention followed by
    "is not" ("Paris is not the capital"). "Not only" and "no doubt" deny nothing.
    """
    window = [w for w, *_ in _fact_words(_prepare(_CLAUSE_BREAK.split(before)[-1]))]
    window = window[-_NEGATION_WINDOW:]
    for i, word in enumerate(window):
        following = window[i + 1] if i + 1 < len(window) else None
        if word in _NEGATIONS and following not in _NOT_A_DENIAL:
            return False
        if (word, following) in _NEGATION_PAIRS:
            return False
    rest = [w for w, *_ in _fact_words(_prepare(_CLAUSE_BREAK.split(after, maxsplit=1)[0]))][:3]
    return not (
        len(rest) >= 2
        and rest[0] in _COPULAS
        and rest[1] in ("not", "never")
        and (len(rest) < 3 or rest[2] not in _NOT_A_DENIAL)
    )


def _text_match(regions: list[str], reference: str) -> bool:
    """The fact's words, in order, asserted somewhere in one of the regions."""
    target = [w for w, *_ in _fact_words(_prepare(reference))]
    if not target:
        return False
    size = len(target)
    for region in regions:
        text = _prepare(region)
        words = _fact_words(text)
        for i in range(len(words) - size + 1):
            if [w for w, *_ in words[i : i + size]] != target:
                continue
            if _asserted(text[: words[i][1]], text[words[i + size - 1][2] :]):
                return True
    return False


def _formula_match(regions: list[str], reference: str) -> bool:
    target = _formula_text(reference).strip()
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(target)}(?![a-z0-9])")
    for region in regions:
        text = _formula_text(region)
        for match in pattern.finditer(text):
            if _asserted(text[: match.start()], text[match.end() :]):
                return True
    return False


class _Budget:
    """The seconds one check may spend in sympy, shared by all its comparisons.

    The exact path runs outside it and never times out; a sympy step that finds the budget spent
    (or spends it) gives None and marks the check as timed out, so it ends "unscored" unless
    another comparison finds the answer correct. Like ``time_limit``, it interrupts sympy only
    on the main thread; elsewhere the parser's own guards must do.
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.timed_out = False

    def run(self, step: Callable[[], _T]) -> _T | None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            return None
        try:
            with time_limit(left):
                return step()
        except ParseTimeout:
            self.timed_out = True
            return None


def _value_count(budget: _Budget, reference: str) -> int | None:
    """How many values the reference has (0: unparseable), None when that ran out of time."""
    exact = exact_values(reference)
    if exact is not None:
        return len(exact)
    values = budget.run(lambda: parse_values(reference))
    return None if values is None else len(values)


def _same_values(budget: _Budget, text: str, reference: str) -> bool:
    """Equal value sets: exactly when both sides are rationals, else with sympy in the budget."""
    given, expected = exact_values(text), exact_values(reference)
    if given is not None and expected is not None:
        return exact_sets_equal(given, expected)
    return bool(budget.run(lambda: value_sets_equal(parse_values(text), parse_values(reference))))


def _asserted_number(budget: _Budget, text: str, reference: str, *, last: bool) -> bool:
    """A number in prose equal to the reference and not denied ("It wasn't 1945.")."""
    matches = list(_NUMBER.finditer(text))
    for match in matches[-1:] if last else matches:
        if _same_values(budget, match.group(0), reference) and _asserted(
            text[: match.start()], text[match.end() :]
        ):
            return True
    return False


def _denies_a_number(text: str) -> bool:
    """Whether a number in ``text`` is denied ("not 5", "isn't 1945"); prose is stripped later."""
    return any(
        not _asserted(text[: match.start()], text[match.end() :])
        for match in _NUMBER.finditer(text)
    )


def _math_match(budget: _Budget, response: str, answer: str | None, reference: str) -> bool:
    count = _value_count(budget, reference)
    if not count:
        return False
    if (
        answer is not None
        and not _denies_a_number(answer)
        and _same_values(budget, answer, reference)
    ):
        return True
    text = _clean_response(response)
    if count != 1 or answer is None or _boxed(text) or _MARKER.search(text):
        return False
    # No committed answer: the last number of the last line, or a number stated in an
    # opening sentence of prose ("It ended in 1945, when Japan surrendered on September 2.").
    if _asserted_number(budget, answer, reference, last=True):
        return True
    if "=" in text:
        return False
    sentence = _number_words_to_digits(_first_sentence(text))
    return _asserted_number(budget, sentence, reference, last=False)


def judge_answer(response: str, reference: str, aliases: Sequence[str] = ()) -> Verdict:
    """The verdict on ``response`` against ``reference`` (or one of ``aliases``).

    "correct" when a comparison finds the same final answer, "unscored" when none does but one
    ran out of its ``_SECONDS_PER_CHECK`` (a busy machine must not make answers wrong), else
    "wrong". An empty response is wrong.

    >>> judge_answer("**Answer:** $x = 8$ or $x = -6$", "-6, 8")
    'correct'
    >>> judge_answer("It isn't Paris.", "Paris")
    'wrong'
    """
    if not response or not response.strip():
        return "wrong"
    budget = _Budget(_SECONDS_PER_CHECK)
    answer = extract_answer(response)
    for ref in (reference, *aliases):
        if not ref or not str(ref).strip():
            continue
        ref = str(ref).strip()
        kind = reference_kind(ref)
        if kind == "math":
            spelled = _number_words_to_digits(answer) if answer else answer
            if _math_match(budget, response, spelled, ref):
                return "correct"
        elif kind == "formula":
            if _formula_match(_regions(response, answer), ref):
                return "correct"
        elif _text_match(_regions(response, answer), ref):
            return "correct"
    return "unscored" if budget.timed_out else "wrong"


def answers_match(response: str, reference: str, aliases: Sequence[str] = ()) -> bool:
    """Whether ``judge_answer`` finds ``response`` correct (unscored counts as not correct).

    >>> answers_match("**Answer:** $x = 8$ or $x = -6$", "-6, 8")
    True
    >>> answers_match("The answer is 7 + √37", "7 \\\\pm \\\\sqrt{38}")
    False
    """
    return judge_answer(response, reference, aliases) == "correct"
