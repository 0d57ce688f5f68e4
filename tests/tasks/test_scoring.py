"""The answer checker on canned responses: equivalent forms pass, close-but-wrong ones fail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from fractions import Fraction

import pytest

import tasks.mathparse
import tasks.scoring
from tasks.mathparse import Exact, exact_values, parse_value
from tasks.scoring import answers_match, extract_answer, judge_answer, reference_kind

CASES = [
    ("**Answer:** 208", "208", True),
    ("**Answer:** 5", "208", False),
    ("**Final Answer:**\n\n$$\\boxed{x = 8 \\text{ or } x = -6}$$", "-6, 8", True),
    ("$$\\boxed{x = 8 \\text{ or } x = -6}$$", "-6, 8", True),
    ("x = 8 or x = -6", "-6, 8", True),
    ("x = 8 or x = 6", "-6, 8", False),
    ("x = 8", "-6, 8", False),
    ("**Answer:** $a = 7 \\pm \\sqrt{38}$", "7 - \\sqrt{38}, 7 + \\sqrt{38}", True),
    (
        "**Final Answer:**\n\n$$x = \\frac{-2 \\pm \\sqrt{502}}{3}$$",
        "\\frac{-2 \\pm \\sqrt{502}}{3}",
        True,
    ),
    (
        "**Final Answer:**\n\n$$x = \\frac{-2 \\pm 2\\sqrt{126}}{3}$$",
        "\\frac{-2 \\pm \\sqrt{502}}{3}",
        False,
    ),
    ("x = (14 ± √152)/2", "7 \\pm \\sqrt{38}", True),
    ("x = (14 ± √150)/2", "7 \\pm \\sqrt{38}", False),
    ("$$\\boxed{x^4 + C}$$", "x^4 + C", True),
    ("$$\\boxed{x^4 + C}$$", "x^{4} + C", True),
    ("x⁴ + C", "x^4 + C", True),
    ("\\boxed{4x^4 + C}", "x^4 + C", False),
    ("f'(x) = 6x", "6x", True),
    ("f'(x) = 6x^2", "6x", False),
    ("The answer is 0.5", "\\frac{1}{2}", True),
    ("The answer is ½", "0.5", True),
    ("Answer: 0.33", "\\frac{1}{3}", True),
    ("Answer: 0.3", "\\frac{1}{3}", False),
    ("Answer: 50%", "\\frac{1}{2}", True),
    ("The area is $25\\pi$ square units.", "25\\pi", True),
    ("The area is 25π cm².", "25\\pi", True),
    ("Area = 78.54", "25\\pi", True),
    ("The capital of France is Paris.", "Paris", True),
    ("The capital of France is Lyon.", "Paris", False),
    ("World War II ended in 1945, when Japan surrendered on September 2.", "1945", True),
    ("World War II ended in 1944.", "1945", False),
    ("There are eight planets in the Solar System.", "8", True),
    ("There are nine planets.", "8", False),
    ("The chemical formula of water is H₂O.", "H2O", True),
    ("The formula is $\\mathrm{H_2O_2}$", "H2O", False),
    ("$\\text{CO}_2$", "CO2", True),
    ("CO", "CO2", False),
    ("The symbol for gold is Au.", "Au", True),
    ("The symbol for gold is Ag.", "Au", False),
    ("George Washington was the first president.", "George Washington", True),
    ("Washington", "George Washington", False),
    ("I think it was Washington", "George Washington", False),
    ("\\boxed{\\frac{3}{4}}", "0.75", True),
    ("\\boxed{\\dfrac34}", "3/4", True),
    ("y' = 3\\cos(3x)", "3\\cos{\\left(3 x \\right)}", True),
    ("\\frac{d}{dx}(\\sin 3x) = 3 \\cos 3x", "3\\cos(3x)", True),
    ("\\boxed{\\cos 3x}", "3\\cos(3x)", False),
    ("x = -3", "-3", True),
    ("x = 3", "-3", False),
    ("The limit is 2.", "2", True),
    ("The limit is \\infty", "\\infty", True),
    ("lim = 1/2", "2", False),
    ("So $x = \\sqrt{8}$", "2\\sqrt{2}", True),
    ("So $x = \\sqrt{6}$", "2\\sqrt{2}", False),
    ("Roots: 3, -2", "x = -2 \\text{ or } x = 3", True),
    ("\\boxed{-2}, \\boxed{3}", "3, -2", True),
    ("Mount Everest", "Everest", True),
    ("Mt. Everest", "Mount Everest", False),
    ("1,000,000", "1000000", True),
    ("3.14", "\\pi", True),
    ("3", "\\pi", False),
    ("", "5", False),
    ("<think>maybe 4</think>\n**Answer:** 5", "5", True),
    ("__import__('os').system('echo hi')", "5", False),
    ("Answer: 9**9**9**9", "5", False),
    ("The probability is 1/6.", "\\frac{1}{6}", True),
    ("The probability is 1/36.", "\\frac{1}{6}", False),
    ("Ouagadougou", "Ouagadougou", True),
    ("São Paulo", "Sao Paulo", True),
    ("x = 2 ± i", "2 - i, 2 + i", True),
    ("x \\in \\{-6, 8\\}", "-6, 8", True),
    ("\\ln|x| + C", "\\log{\\left(\\left|{x}\\right| \\right)} + C", True),
    ("The angle is 45^\\circ", "45", True),
    ("The angle is 45°", "45", True),
    ("The area is 24 m²", "24", True),
    ("The area is 24 cm^2", "24", True),
    ("\\boxed{2e^{2x}}", "2 e^{2 x}", True),
    ("\\boxed{e^{2x}}", "2 e^{2 x}", False),
    ("\\sin^2 x", "\\sin^{2}{\\left(x \\right)}", True),
    ("x = \\pm 3", "-3, 3", True),
    ("x = 3", "-3, 3", False),
    ("The solutions are $x = 2$ and $x = 3$.", "2, 3", True),
    ("The answer is not 5, it is 6", "5", False),
    ("Answer: (10^400)^(400)^(400)", "5", False),
    ("x = 4/3", "\\frac{4}{3}", True),
    ("x = 3/4", "\\frac{4}{3}", False),
    ("-\\frac{1}{2}", "-0.5", True),
    ("\\frac{1}{2}", "-0.5", False),
    ("$$\\frac{d}{dx}\\left(x^3\\right) = 3x^2$$", "3 x^{2}", True),
    ("The Pacific Ocean is the largest.", "Pacific", True),
    ("two hundred and six bones", "206", True),
]


@pytest.mark.parametrize(("response", "reference", "expected"), CASES)
def test_answers_match(response: str, reference: str, expected: bool) -> None:
    assert answers_match(response, reference) is expected


def test_there_are_enough_cases_of_both_kinds() -> None:
    assert sum(1 for *_, ok in CASES if ok) >= 20
    assert sum(1 for *_, ok in CASES if not ok) >= 20


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Some steps.\n\n**Answer:** 208", "208"),
        ("**Final Answer:**\n\n$$x = 7 \\pm \\sqrt{38}$$", "$$x = 7 \\pm \\sqrt{38}$$"),
        ("so $\\boxed{x^4 + C}$ where C is a constant", "x^4 + C"),
        ("Roots: \\boxed{-2} and \\boxed{3}", "-2, 3"),
        ("<think>it is 4</think>The answer is 5.", "5"),
        ("We get 3 and then\nx = 12", "x = 12"),
        ("", None),
    ],
)
def test_extract_answer(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


def test_aliases_are_accepted() -> None:
    assert answers_match("It is Peking.", "Beijing", aliases=("Peking",))
    assert not answers_match("It is Shanghai.", "Beijing", aliases=("Peking",))


@pytest.mark.parametrize(
    ("reference", "kind"),
    [
        ("H2O", "formula"),
        ("Au", "formula"),
        ("O", "formula"),
        ("Paris", "text"),
        ("x^4 + C", "math"),
        ("7 \\pm \\sqrt{38}", "math"),
        ("1945", "math"),
    ],
)
def test_reference_kind(reference: str, kind: str) -> None:
    assert reference_kind(reference) == kind


def test_adversarial_input_is_refused_quickly() -> None:
    assert not answers_match("Answer: 10**10**10**10", "5")
    assert not answers_match("Answer: __import__('os').getcwd()", "5")


NEGATION_CASES = [
    ("The capital of France is not Paris; it is Lyon.", "Paris", "wrong"),
    ("It isn't Paris.", "Paris", "wrong"),
    ("It isn\u2019t Paris.", "Paris", "wrong"),
    ("It isnt Paris", "Paris", "wrong"),
    ("Paris is the capital of France.", "Paris", "correct"),
    ("The capital is Paris, not Lyon.", "Paris", "correct"),
    ("It is not Lyon, it is Paris.", "Paris", "correct"),
    ("It is not Lyon. It is Paris.", "Paris", "correct"),
    ("Not Lyon but Paris.", "Paris", "correct"),
    ("No, it is Paris.", "Paris", "correct"),
    ("It was never Paris.", "Paris", "wrong"),
    ("It wasn't the city of Paris.", "Paris", "wrong"),
    ("Rather than Paris, the capital is Lyon.", "Paris", "wrong"),
    ("The capital is Lyon instead of Paris.", "Paris", "wrong"),
    ("The capital is Paris instead of Lyon.", "Paris", "correct"),
    ("Paris is not the capital of France.", "Paris", "wrong"),
    ("Not only is Paris the capital, it is the largest city.", "Paris", "correct"),
    ("There is no doubt it is Paris.", "Paris", "correct"),
    ("**Answer:** not Paris", "Paris", "wrong"),
    ("It is Washington, D.C.", "Washington, D.C.", "correct"),
    ("It is not Washington, D.C.", "Washington, D.C.", "wrong"),
    ("The formula of water is not H₂O.", "H2O", "wrong"),
    ("The formula of water is not H2O2 but H2O.", "H2O", "correct"),
    ("It wasn't 1945.", "1945", "wrong"),
    ("World War II did not end in 1944 but in 1945.", "1945", "correct"),
    ("There are not nine planets.", "9", "wrong"),
    ("**Answer:** not 5", "5", "wrong"),
]


@pytest.mark.parametrize(("response", "reference", "verdict"), NEGATION_CASES)
def test_a_denied_mention_is_not_the_answer(response: str, reference: str, verdict: str) -> None:
    assert judge_answer(response, reference) == verdict
    assert answers_match(response, reference) is (verdict == "correct")


def test_a_denied_alias_is_not_the_answer() -> None:
    assert judge_answer("It is not Peking.", "Beijing", aliases=("Peking",)) == "wrong"
    assert judge_answer("Peking, not Shanghai.", "Beijing", aliases=("Peking",)) == "correct"


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("-7/3", [Exact(Fraction(-7, 3))]),
        ("\\frac{-7}{3}", [Exact(Fraction(-7, 3))]),
        ("-\\frac{7}{3}", [Exact(Fraction(-7, 3))]),
        ("x = -6 or x = 8", [Exact(Fraction(-6)), Exact(Fraction(8))]),
        ("-6, 8", [Exact(Fraction(-6)), Exact(Fraction(8))]),
        ("0.25", [Exact(Fraction(1, 4), decimals=2)]),
        ("1,000,000", [Exact(Fraction(1000000))]),
        ("x = \\pm 3", [Exact(Fraction(3)), Exact(Fraction(-3))]),
        ("Therefore", []),
        ("\\sqrt{8}", None),
        ("x^4 + C", None),
        ("50%", None),
        ("1/0", None),
        ("2(3)", None),
    ],
)
def test_exact_values_read_the_common_forms_only(text: str, values: list[Exact] | None) -> None:
    assert exact_values(text) == values


def _no_sympy(*_args: object, **_kwargs: object) -> object:
    raise AssertionError("sympy path taken")


EXACT_CASES = [
    ("**Answer:** 208", "208", "correct"),
    ("**Answer:** 5", "208", "wrong"),
    ("x = -7/3", "\\frac{-7}{3}", "correct"),
    ("$$\\boxed{-\\frac{7}{3}}$$", "-7/3", "correct"),
    ("x = 7/3", "-7/3", "wrong"),
    ("x = -6 or x = 8", "-6, 8", "correct"),
    ("$$\\boxed{x = 8 \\text{ or } x = -6}$$", "-6, 8", "correct"),
    ("x = 8", "-6, 8", "wrong"),
    ("x = 8 or x = 6", "-6, 8", "wrong"),
    ("Answer: 0.33", "\\frac{1}{3}", "correct"),
    ("Answer: 0.3", "\\frac{1}{3}", "wrong"),
    ("1,000,000", "1000000", "correct"),
    ("World War II ended in 1945, when Japan surrendered on September 2.", "1945", "correct"),
    ("two hundred and six bones", "206", "correct"),
]


@pytest.mark.parametrize(("response", "reference", "verdict"), EXACT_CASES)
def test_common_forms_take_the_exact_path(
    response: str, reference: str, verdict: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks.scoring, "parse_values", _no_sympy)
    monkeypatch.setattr(tasks.scoring, "value_sets_equal", _no_sympy)
    monkeypatch.setattr(tasks.mathparse, "parse_expr", _no_sympy)
    assert judge_answer(response, reference) == verdict


def test_other_forms_still_reach_sympy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact-path test can fail: a root is not a rational, so sympy is asked."""
    monkeypatch.setattr(tasks.scoring, "parse_values", _no_sympy)
    with pytest.raises(AssertionError, match="sympy path taken"):
        judge_answer("So $x = \\sqrt{8}$", "2\\sqrt{2}")


@pytest.fixture
def slow_sympy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """sympy's parser takes 30 s and a check may spend 0.2 s: every sympy step times out."""
    calls: list[str] = []

    def slow_parse(text: str, *_args: object, **_kwargs: object) -> object:
        calls.append(text)
        time.sleep(30)
        raise AssertionError("the time limit did not interrupt the parser")

    parse_value.cache_clear()
    monkeypatch.setattr(tasks.scoring, "_SECONDS_PER_CHECK", 0.2)
    monkeypatch.setattr(tasks.mathparse, "parse_expr", slow_parse)
    yield calls
    parse_value.cache_clear()


def test_a_timed_out_comparison_is_unscored_not_wrong(slow_sympy: list[str]) -> None:
    start = time.monotonic()
    assert judge_answer("$$\\boxed{x^4 + C}$$", "x^4 + C") == "unscored"
    assert not answers_match("$$\\boxed{x^4 + C}$$", "x^4 + C")
    assert time.monotonic() - start < 5
    assert slow_sympy, "the slow parser was never called"


def test_the_budget_is_shared_by_every_comparison_of_a_check(slow_sympy: list[str]) -> None:
    aliases = ("x^{4} + C", "x^4 + K", "C + x^4")
    assert judge_answer("$$\\boxed{x^4 + C}$$", "x^4 + C", aliases) == "unscored"
    assert len(slow_sympy) == 1  # once spent, the budget starts no further sympy step


def test_the_exact_path_never_times_out(slow_sympy: list[str]) -> None:
    assert judge_answer("**Answer:** 8", "8") == "correct"
    assert judge_answer("**Answer:** x = 8 or x = -6", "-6, 8") == "correct"
    assert judge_answer("**Answer:** 7", "8") == "wrong"
    assert not slow_sympy


def test_a_match_after_a_timeout_is_correct(slow_sympy: list[str]) -> None:
    assert judge_answer("Paris.", "\\sqrt{2}", aliases=("Paris",)) == "correct"
    assert slow_sympy == ["sqrt(2)"]  # the reference timed out, the alias still matched


def test_a_timeout_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch, slow_sympy: list[str]
) -> None:
    assert judge_answer("$$\\boxed{3x^2 + 7}$$", "3x^2 + 7") == "unscored"
    monkeypatch.undo()
    assert judge_answer("$$\\boxed{3x^2 + 7}$$", "3x^2 + 7") == "correct"
