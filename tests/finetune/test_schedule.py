"""The learning-rate schedule and the step plan: warm-up really ramps, cosine really decays."""

from __future__ import annotations

import itertools
import math

import pytest

from finetune.train import lr_at, plan_steps, steps_per_epoch, warmup_steps

PEAK = 3e-5


def test_warm_up_ramps_linearly_to_the_peak_at_its_last_step():
    total = 39  # the paper's v11: 50 examples, batch 2 x 2, 3 epochs
    warmup = warmup_steps(total, 0.1)
    assert warmup == 4
    ramp = [lr_at(s, total, PEAK, 0.1) for s in range(warmup)]
    assert ramp == pytest.approx([PEAK * (s + 1) / warmup for s in range(warmup)])
    assert ramp[-1] == pytest.approx(PEAK)
    assert max(lr_at(s, total, PEAK, 0.1) for s in range(total)) == pytest.approx(PEAK)


def test_cosine_decays_monotonically_to_about_zero():
    total = 100
    lrs = [lr_at(s, total, PEAK, 0.1) for s in range(total)]
    decay = lrs[10:]
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert 0 < lrs[-1] < 0.001 * PEAK
    # halfway through the decay the cosine is at half the peak (not linear: check a quarter too)
    assert lr_at(10 + 45, total, PEAK, 0.1) == pytest.approx(PEAK / 2, rel=0.05)
    quarter = lr_at(10 + 22, total, PEAK, 0.1)
    assert quarter == pytest.approx(PEAK * 0.5 * (1 + math.cos(math.pi * 23 / 91)))
    assert quarter > PEAK * 0.75  # a linear decay would be at ~0.75 here


def test_no_warm_up_starts_at_the_peak():
    assert lr_at(0, 10, PEAK, 0.0) == pytest.approx(PEAK * 0.5 * (1 + math.cos(math.pi / 11)))
    assert lr_at(0, 1, PEAK, 0.1) == PEAK


def test_every_epoch_uses_every_example_once_in_a_seeded_order():
    plan = plan_steps(50, 2, 2, epochs=3, max_steps=None, seed=7)
    per_epoch = steps_per_epoch(50, 2, 2)
    assert per_epoch == 13 and len(plan) == 39
    for epoch in range(3):
        steps = plan[epoch * per_epoch : (epoch + 1) * per_epoch]
        seen = [i for step in steps for micro in step for i in micro]
        assert sorted(seen) == list(range(50))
    assert len(plan[12]) == 1 and len(plan[12][0]) == 2  # 25 micro-batches: the 13th is alone
    assert plan == plan_steps(50, 2, 2, epochs=3, max_steps=None, seed=7)
    assert plan[:13] != plan[13:26]  # reshuffled each epoch
    assert plan != plan_steps(50, 2, 2, epochs=3, max_steps=None, seed=8)


def test_max_steps_and_fractional_epochs():
    assert len(plan_steps(50, 2, 2, epochs=3, max_steps=5, seed=0)) == 5
    assert len(plan_steps(50, 2, 2, epochs=0.5, max_steps=None, seed=0)) == 7
    assert len(plan_steps(3, 4, 1, epochs=2, max_steps=None, seed=0)) == 2
