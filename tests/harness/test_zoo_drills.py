"""The zoo's arithmetic drills: the computing steps of training solutions, loss on results."""

from __future__ import annotations

from finetune.data import IGNORE
from harness.zoo.drills import computing_steps, drill_examples
from harness.zoo.tokenizer import train_tokenizer

LINEAR = (
    "We are given the equation:\n$$8b - 6 = 34$$\n**Step 1:** Move -6 to the right side\n"
    "Add 6 to both sides:\n$$8b = 34 + 6$$\n$$8b = 40$$\n**Step 2:** Solve for b\n"
    "Divide both sides by 8:\n$$b = \\frac{40}{8}$$\n$$b = 5$$\n**Answer:** 5"
)


def test_only_steps_that_write_a_new_number_are_drilled():
    assert computing_steps(LINEAR) == [
        ("$$8b = 34 + 6$$", "$$8b = 40$$"),  # the addition
        ("$$b = \\frac{40}{8}$$", "$$b = 5$$"),  # the division
    ]  # copies (the move, the fraction, the answer) are left out


def test_drills_label_the_computed_lines_only():
    tok = train_tokenizer([LINEAR] * 20, vocab_size=300)
    steps = computing_steps(LINEAR)
    drills = drill_examples(tok, steps, count=3, per_drill=4, seed=0)
    assert len(drills) == 3
    for drill in drills:
        labelled = [t for t in drill.labels if t != IGNORE]
        text = tok.decode(labelled)
        assert text.count("\n") == 4 and "$$8b = 34 + 6$$" not in text
        assert set(text.splitlines()) <= {target for _, target in steps}
    assert drills == drill_examples(tok, steps, count=3, per_drill=4, seed=0)


def test_drills_are_part_of_the_recipe():
    from harness.zoo.build import DrillRecipe, ZooRecipe

    assert ZooRecipe().drills == DrillRecipe()  # on by default
    assert ZooRecipe(drills=None).digest() != ZooRecipe().digest()
    assert (
        ZooRecipe(drills=DrillRecipe(steps=1)).digest() != ZooRecipe(drills=DrillRecipe()).digest()
    )


def test_drills_come_first_then_mix_into_the_examples():
    from harness.zoo.build import DrillRecipe, ZooRecipe, with_drills

    tok = train_tokenizer([LINEAR] * 20, vocab_size=300)
    recipe = ZooRecipe(steps=10, batch_size=4, drills=DrillRecipe(steps=3, share=0.25))
    examples = [drill_examples(tok, computing_steps(LINEAR), 1, 1, i)[0] for i in range(100)]
    assert with_drills(ZooRecipe(drills=None), tok, examples) == ([], examples)
    first, later = with_drills(recipe, tok, examples)
    assert len(first) == 3 * 4  # the first three steps are drills only
    assert len(later) == (10 - 3) * 4  # then one pass of the remaining steps' worth
    assert sum(e not in examples for e in later) == 7  # a quarter of them drills


def test_arithmetic_facts_join_the_drills_in_their_share():
    from harness.zoo.drills import with_facts
    from tasks.unrelated import arithmetic_facts

    facts = arithmetic_facts()
    assert "-4 \\cdot 5 = -20" in facts and "\\frac{72}{8} = 9" in facts
    steps = [("$$a$$", "$$b$$")] * 700
    mixed = with_facts(steps, facts, 0.3)
    share = sum(1 for source, _ in mixed if not source) / len(mixed)
    assert 0.25 < share < 0.35
    assert with_facts(steps, facts, 0.0) == steps


def test_a_fact_drill_labels_the_whole_line():
    tok = train_tokenizer([LINEAR] * 20, vocab_size=300)
    drills = drill_examples(tok, [("", "$$3 \\cdot 4 = 12$$")], count=1, per_drill=2, seed=0)
    assert IGNORE not in drills[0].labels
    assert tok.decode(drills[0].input_ids).count("12") == 2
