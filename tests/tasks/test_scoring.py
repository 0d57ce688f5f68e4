"""The answer checker on canned responses: equivalent forms pass, close-but-wrong ones fail."""

from __future__ import annotations

import pytest

from tasks.scoring import answers_match, extract_answer, reference_kind

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
