"""The experimental ``goodput`` rule's arithmetic, checked by hand, and its calibration fitters on synthetic traces."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from entspec.engine.config import EntropyConfig
from entspec.rules import DraftState, RoundFeedback, build_criterion
from entspec.rules.goodput import fit_calibration, fit_isotonic_calibration, fit_next_calibration


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def rule(**fields):
    base = {"strategy": "goodput", "cost_ratio": 0.3, "verify_slope": 0.1, "max_draft_len": 8}
    r = build_criterion(EntropyConfig(**{**base, **fields}))
    r.reset()
    return r


def state(entropies, probs):
    return DraftState(entropies=list(entropies), token_probs=list(probs), shannon_nats=list(entropies))


def test_acceptance_is_the_logistic_calibration():
    r = rule(calib_intercept=1.0, calib_slope=-2.0, calib_prob=0.5)
    assert r.accept_prob(0.7, 0.4) == pytest.approx(sigmoid(1.0 - 2.0 * 0.7 + 0.5 * 0.4))


def test_stop_when_the_next_tokens_expected_gain_does_not_pay_its_cost():
    # R starts at 1 (one pseudo-round of plain decoding), a step costs c + s = 0.4 verifier calls.
    r = rule(calib_intercept=2.0, calib_slope=-1.0, goodput_margin=1.0)
    b1, b2 = sigmoid(2.0 - 0.5), sigmoid(2.0 - 2.5)
    assert r.threshold == pytest.approx(1.0)
    # gain of one more token = P_j * beta_j (the last token's beta stands in for the next one)
    assert b1 * b1 == pytest.approx(0.669, abs=1e-3) and not r.should_stop(state([0.5], [0.9]))  # > 0.4
    assert b1 * b2 * b2 == pytest.approx(0.117, abs=1e-3) and r.should_stop(state([0.5, 2.5], [0.9, 0.2]))
    # a higher margin stops earlier: 0.67 <= 2.0 * 0.4
    assert rule(calib_intercept=2.0, calib_slope=-1.0, goodput_margin=2.0).should_stop(state([0.5], [0.9]))


def test_the_rate_follows_the_rounds():
    r = rule(calib_lr=0.0, goodput_margin=1.5)
    r.update(RoundFeedback(drafted=4, accepted=3, entropies=[0.1] * 4, token_probs=[0.9] * 4))
    # tokens 1 + (3 + 1) = 5, time 1 + (1 + 4 * 0.4) = 3.6
    assert r.threshold == pytest.approx(1.5 * 5 / 3.6)


def test_online_update_is_one_logistic_sgd_step_per_verdict_up_to_the_first_rejection():
    r = rule(calib_intercept=0.5, calib_slope=-1.0, calib_prob=0.2, calib_lr=0.1)
    w = [0.5, -1.0, 0.2]
    stats = [(0.3, 0.8), (1.2, 0.5), (2.0, 0.1)]  # drafted 3, accepted 1: verdicts on tokens 0 (yes), 1 (no)
    for i, (h, q) in enumerate(stats[:2]):
        err = (i < 1) - sigmoid(w[0] + w[1] * h + w[2] * q)
        w = [w[0] + 0.1 * err, w[1] + 0.1 * err * h, w[2] + 0.1 * err * q]
    r.update(RoundFeedback(3, 1, [h for h, _ in stats], [q for _, q in stats]))
    assert r.now == pytest.approx(w)


def test_isotonic_curve_with_its_online_offset():
    r = rule(calib_curve=[[0.0, 0.9], [2.0, 0.5]], calib_lr=0.5)
    assert r.accept_prob(1.0, 0.5) == pytest.approx(0.7)  # linear between knots
    assert r.accept_prob(5.0, 0.5) == pytest.approx(0.5)  # clipped beyond the last knot
    r.update(RoundFeedback(1, 0, [1.0], [0.5]))  # a rejection at beta 0.7 lowers the logit by 0.5 * 0.7
    assert r.offset == pytest.approx(-0.35)
    assert r.accept_prob(1.0, 0.5) == pytest.approx(sigmoid(math.log(0.7 / 0.3) - 0.35))


def test_next_token_calibration_predicts_the_gain():
    r = rule(calib_intercept=5.0, calib_slope=0.0, next_intercept=-3.0, next_slope=0.0, goodput_margin=1.0)
    # the current token is surely right (beta ~ 0.99), the next one predicted at sigmoid(-3) = 0.047: stop
    assert r.should_stop(state([0.1], [0.9]))


def synthetic_traces(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.uniform(0, 4, n)
    q = rng.uniform(0, 1, n)
    match = rng.random(n) < 1 / (1 + np.exp(-(2.0 - 1.5 * h)))
    entropy = np.zeros((n, 4))
    entropy[:, 0] = h  # ENTROPY_TYPES[0] is "shannon"
    return [SimpleNamespace(entropy=entropy, token_prob=q, match=match)]


def test_fit_calibration_recovers_the_logistic_relation():
    fit = fit_calibration(synthetic_traces())
    assert fit["calib_intercept"] == pytest.approx(2.0, abs=0.3)
    assert fit["calib_slope"] == pytest.approx(-1.5, abs=0.2)
    assert fit["calib_prob"] == 0.0
    assert abs(fit_calibration(synthetic_traces(), with_prob=True)["calib_prob"]) < 0.4  # q carries nothing here


def test_fit_calibration_of_a_drafter_always_right_is_flat_and_clipped():
    t = synthetic_traces()[0]
    t.match = np.ones_like(t.match)
    fit = fit_calibration([t])
    assert fit == {"calib_intercept": pytest.approx(math.log(0.99 / 0.01)), "calib_slope": 0.0, "calib_prob": 0.0}


def test_isotonic_fit_is_decreasing_in_entropy():
    curve = fit_isotonic_calibration(synthetic_traces(), knots=8)["calib_curve"]
    xs, ps = zip(*curve)
    assert list(xs) == sorted(xs) and all(a >= b for a, b in zip(ps, ps[1:]))
    assert ps[0] > 0.8 and ps[-1] < 0.1


def test_next_calibration_reads_the_previous_position():
    t = synthetic_traces()[0]
    t.match = np.ones_like(t.match)
    t.match[1:] = t.entropy[:-1, 0] < 2.0  # right at t + 1 exactly when the entropy at t is low
    fit = fit_next_calibration([t])
    assert fit["next_slope"] < -3


def test_a_drafted_token_is_priced_by_the_measured_verify_curve():
    """One price for the gate, goodput and tune (`RoundCost`): with a curve where the third verified token is dear,
    the second drafted token costs v(3) - v(2) + c = 0.7 and a gain of 0.5 no longer pays; linearly it costs 0.4."""
    z = math.log(math.sqrt(0.5) / (1 - math.sqrt(0.5)))  # beta = sqrt(0.5): gain after one token = 0.5
    curved = rule(calib_intercept=z, calib_slope=0.0, verify_curve=[[1, 1.0], [2, 0.9], [3, 1.3]])
    linear = rule(calib_intercept=z, calib_slope=0.0)
    one = state([0.5], [0.9])
    assert curved.cost.marginal(1) == pytest.approx(0.7) and curved.should_stop(one)
    assert linear.cost.marginal(1) == pytest.approx(0.4) and not linear.should_stop(one)
    curved.update(RoundFeedback(drafted=2, accepted=2, entropies=[0.5, 0.5], token_probs=[0.9, 0.9]))
    assert curved.tokens / curved.time == pytest.approx((1 + 3) / (1 + 1.3 + 2 * 0.3))
