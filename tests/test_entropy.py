import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entspec import EntropyComputer
from entspec.engine.entropy import renyi_entropy, shannon_entropy, topk_entropy


def test_uniform_distribution_has_log_v_for_every_type():
    logits = torch.zeros(50)
    for h in (shannon_entropy(logits), renyi_entropy(logits, 2.0), renyi_entropy(logits, math.inf)):
        assert float(h) == pytest.approx(math.log(50), abs=1e-5)
    assert float(topk_entropy(logits, 10)) == pytest.approx(math.log(10), abs=1e-5)


def test_shannon_matches_scipy_and_bits_option():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(4, 30)) * 3)
    p = torch.softmax(logits, -1).numpy()
    expected = scipy.stats.entropy(p, axis=-1)
    assert torch.allclose(shannon_entropy(logits), torch.tensor(expected, dtype=torch.float32), atol=1e-5)
    bits = EntropyComputer(unit="bits")(logits)
    assert np.allclose(bits.numpy(), scipy.stats.entropy(p, base=2, axis=-1), atol=1e-5)


def test_renyi_closed_forms():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125])
    logits = p.log()
    assert float(renyi_entropy(logits, 2.0)) == pytest.approx(-math.log(float((p**2).sum())), abs=1e-6)
    assert float(renyi_entropy(logits, math.inf)) == pytest.approx(-math.log(0.5), abs=1e-6)
    assert float(renyi_entropy(logits, 1.0)) == pytest.approx(float(shannon_entropy(logits)), abs=1e-6)
    assert float(renyi_entropy(logits, 1.0 + 1e-4)) == pytest.approx(float(shannon_entropy(logits)), abs=1e-3)
    assert float(renyi_entropy(logits, 0.0)) == pytest.approx(math.log(4), abs=1e-6)


def test_topk_renormalizes_the_k_largest():
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    top2 = torch.tensor([0.4, 0.3]) / 0.7
    assert float(topk_entropy(p.log(), 2)) == pytest.approx(float(scipy.stats.entropy(top2)), abs=1e-6)


def test_masked_logits_count_as_zero_probability():
    logits = torch.tensor([1.0, 2.0, -math.inf, -math.inf])
    p = torch.softmax(torch.tensor([1.0, 2.0]), -1).numpy()
    assert float(shannon_entropy(logits)) == pytest.approx(scipy.stats.entropy(p), abs=1e-6)
    assert float(renyi_entropy(logits, 2.0)) == pytest.approx(-math.log((p**2).sum()), abs=1e-6)
    assert math.isfinite(float(topk_entropy(logits, 4)))


def test_low_precision_logits_are_computed_in_float32():
    logits = torch.randn(3, 100) * 4
    h = shannon_entropy(logits.bfloat16())
    assert h.dtype == torch.float32
    assert torch.allclose(h, shannon_entropy(logits.bfloat16().float()))


def test_nan_logits_raise_a_clear_error():
    with pytest.raises(ValueError, match="NaN"):
        shannon_entropy(torch.tensor([0.0, float("nan")]))


def test_unknown_entropy_type_is_rejected():
    with pytest.raises(ValueError, match="entropy_type"):
        EntropyComputer("tsallis")


logit_vectors = st.lists(st.floats(-30, 30, allow_nan=False), min_size=2, max_size=40)


@settings(max_examples=200, deadline=None)
@given(logit_vectors)
def test_entropies_lie_between_zero_and_log_v(values):
    logits = torch.tensor(values)
    bound = math.log(len(values)) + 1e-4
    for h in (shannon_entropy(logits), renyi_entropy(logits, 0.5), renyi_entropy(logits, 3.0),
              renyi_entropy(logits, math.inf), topk_entropy(logits, 5)):
        assert -1e-5 <= float(h) <= bound


@settings(max_examples=200, deadline=None)
@given(logit_vectors, st.floats(0.05, 10.0), st.floats(0.05, 10.0))
def test_renyi_entropy_is_non_increasing_in_alpha(values, a, b):
    logits = torch.tensor(values)
    lo, hi = min(a, b), max(a, b)
    assert float(renyi_entropy(logits, hi)) <= float(renyi_entropy(logits, lo)) + 1e-4
    assert float(renyi_entropy(logits, math.inf)) <= float(renyi_entropy(logits, hi)) + 1e-4
