import pytest

from entspec import STOPPING_CRITERIA, ConfigError, EntropyConfig, StoppingCriterion, register
from entspec.engine.stopping import RULES, entropy_rules, unregister
from entspec.engine.stopping import DraftState, RoundFeedback, build_criterion


def state(entropies, probs=None):
    probs = probs or [0.9] * len(entropies)
    return DraftState(entropies=list(entropies), token_probs=list(probs), shannon_nats=list(entropies))


def rule(strategy, **kw):
    return build_criterion(EntropyConfig(strategy=strategy, **kw))


def test_registry_holds_every_strategy():
    assert {"absolute", "relative", "window", "combined", "adaptive", "fixed", "confidence", "heuristic",
            "svip", "adaedl"} <= set(STOPPING_CRITERIA)


def test_absolute_stops_above_theta():
    r = rule("absolute", theta_abs=1.0)
    assert not r.should_stop(state([0.5, 1.0]))
    assert r.should_stop(state([0.5, 1.01]))


def test_relative_uses_absolute_until_reference_then_ema_of_accepted_entropies():
    r = rule("relative", theta_abs=2.0, theta_rel=2.0, reference_momentum=0.5)
    assert r.threshold == 2.0
    r.update(RoundFeedback(drafted=3, accepted=2, entropies=[0.4, 0.8, 5.0]))  # 5.0 was rejected: ignored
    assert r.reference == pytest.approx(0.5 * 0.4 + 0.5 * 0.8)
    assert r.threshold == pytest.approx(1.2)
    assert r.should_stop(state([1.3])) and not r.should_stop(state([1.1]))
    r.reset()
    assert r.reference is None


def test_window_averages_the_last_tokens():
    r = rule("window", window_size=2, theta_window=1.0)
    assert not r.should_stop(state([3.0, 0.1, 1.5]))  # mean(0.1, 1.5) = 0.8
    assert r.should_stop(state([0.1, 1.5, 0.7]))  # mean(1.5, 0.7) = 1.1
    assert rule("window", theta_abs=0.7).threshold == 0.7


def test_combined_any_and_all():
    crit = [{"strategy": "absolute", "theta_abs": 1.0}, {"strategy": "confidence", "confidence_threshold": 0.5}]
    any_rule = rule("combined", criteria=crit, combine="any")
    all_rule = rule("combined", criteria=crit, combine="all")
    s = state([2.0], probs=[0.9])  # entropy trips, confidence does not
    assert any_rule.should_stop(s) and not all_rule.should_stop(s)
    assert all_rule.should_stop(state([2.0], probs=[0.1]))


def test_adaptive_threshold_moves_toward_target_within_bounds():
    r = rule("adaptive", theta_abs=1.0, target_acceptance=0.5, adapt_rate=1.0, theta_min=0.5, theta_max=1.5)
    r.update(RoundFeedback(4, 4, [0.1] * 4))  # all accepted: draft longer
    assert r.threshold > 1.0
    for _ in range(50):
        r.update(RoundFeedback(4, 4, [0.1] * 4))
    assert r.threshold == 1.5
    for _ in range(50):
        r.update(RoundFeedback(4, 0, [0.1] * 4))
    assert r.threshold == 0.5
    r.reset()
    assert r.threshold == 1.0


def test_confidence_svip_adaedl():
    assert rule("confidence", confidence_threshold=0.4).should_stop(state([0.1], probs=[0.3]))
    assert not rule("confidence", confidence_threshold=0.4).should_stop(state([5.0], probs=[0.5]))
    svip = rule("svip")  # sqrt(0.15 H) > 0.3  <=>  H > 0.6
    assert svip.should_stop(state([0.61])) and not svip.should_stop(state([0.59]))
    ada = rule("adaedl", adaedl_gamma=0.2, adaedl_lambda=0.5)  # 1 - sqrt(0.2 H) < 0.5  <=>  H > 1.25
    assert ada.should_stop(state([1.3])) and not ada.should_stop(state([1.2]))
    ada.update(RoundFeedback(4, 0, [1.0] * 4))  # low acceptance: lambda rises, stops earlier
    assert ada.threshold > 0.5


def test_heuristic_schedule_follows_hugging_face():
    r = rule("heuristic", heuristic_initial=3, max_draft_len=6)
    assert not r.should_stop(state([0.0] * 2)) and r.should_stop(state([0.0] * 3))
    r.update(RoundFeedback(3, 3, [0.0] * 3))
    assert r.k == 5
    r.update(RoundFeedback(5, 5, [0.0] * 5))
    assert r.k == 6  # capped by max_draft_len
    r.update(RoundFeedback(6, 2, [0.0] * 6))
    assert r.k == 5


def test_fixed_never_stops_early():
    assert not rule("fixed").should_stop(state([100.0]))


def test_a_new_rule_is_one_class_and_one_registry_entry():
    @register("test_top1_gap")
    class Top1(StoppingCriterion):
        def should_stop(self, s):
            return s.token_probs[-1] < 0.2

    try:
        r = build_criterion(EntropyConfig(strategy="test_top1_gap"))
        assert r.should_stop(state([0.0], probs=[0.1]))
    finally:
        unregister("test_top1_gap")


def test_a_registered_rule_appears_in_every_tool_with_no_other_edit(capsys):
    """Issue 11: the CLI, the tuning sweep, the analysis sweep axis and the bench targets ask the registry."""
    from entspec.analysis.load import sweep_parameter
    from entspec.cli import build_parser
    from entspec.replay.tune import configurations

    @register("test_low_prob", reads=("token_probs",), threshold="confidence_threshold",
              sweep={"confidence_threshold": (0.1, 0.5)})
    class LowProb(StoppingCriterion):
        def should_stop(self, s):
            return s.token_probs[-1] < self.config.confidence_threshold

    try:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["tune", "--help"])
        assert "test_low_prob" in capsys.readouterr().out
        swept = [c for c in configurations(20, {}) if c["strategy"] == "test_low_prob"]
        assert [c["confidence_threshold"] for c in swept] == [0.1, 0.5]
        assert sweep_parameter("test_low_prob", {"confidence_threshold": 0.5}) == ("confidence_threshold", 0.5)
        assert "test_low_prob" not in entropy_rules()  # it reads token probabilities, not entropy
    finally:
        unregister("test_low_prob")
    assert "test_low_prob" not in RULES


def test_a_rule_with_its_own_parameter_is_one_class_with_no_other_edit(capsys):
    """Issue 11: a rule declares its parameter (typed, bounded, with a default) and every tool takes it:
    EntropyConfig (keyword, attribute, validation, to_dict), methods of an experiment, the tuning sweep, the
    analysis sweep axis, the CLI help and the bench's Targets line."""
    from dataclasses import dataclass, field

    import pandas as pd

    from entspec.analysis.load import sweep_parameter
    from entspec.bench.report import targets
    from entspec.cli import build_parser
    from entspec.experiment.methods import _make
    from entspec.replay.tune import configurations
    from entspec.validate import bounds

    @dataclass(frozen=True)
    class MarginParams:
        margin_nats: float = field(default=1.0, metadata=bounds(min=0, max=5))

    @register("test_margin", threshold="margin_nats", params=MarginParams, sweep={"margin_nats": (0.5, 1.5)})
    class EntropyMargin(StoppingCriterion):
        """Stop when the entropy rises more than margin_nats above the round's first token's."""

        def should_stop(self, s):
            return s.entropies[-1] - s.entropies[0] > self.config.margin_nats

    try:
        cfg = EntropyConfig(strategy="test_margin", margin_nats=0.5)
        assert cfg.margin_nats == 0.5 and EntropyConfig(strategy="test_margin").margin_nats == 1.0
        assert cfg.to_dict()["margin_nats"] == 0.5 and EntropyConfig.from_dict(cfg.to_dict()) == cfg
        assert RULES["test_margin"].make_params(cfg) == MarginParams(0.5)
        assert build_criterion(cfg).should_stop(state([0.1, 0.7]))
        with pytest.raises(ConfigError, match="^margin_nats: must be in"):
            EntropyConfig(strategy="test_margin", margin_nats=9.0)
        with pytest.raises(ConfigError, match="margin_nats: expected float"):
            _make("entspec", {"strategy": "test_margin", "margin_nats": "wide"}, "methods[0]")
        assert _make("entspec", {"strategy": "test_margin", "margin_nats": 0.5}, "m").id == "test_margin[margin_nats=0.5]"
        swept = [c for c in configurations(20, {}) if c["strategy"] == "test_margin"]
        assert [c["margin_nats"] for c in swept] == [0.5, 1.5]
        assert sweep_parameter("test_margin", {"margin_nats": 1.5}) == ("margin_nats", 1.5)
        assert "test_margin" in entropy_rules()
        with pytest.raises(SystemExit):
            build_parser().parse_args(["tune", "--help"])
        assert "test_margin" in capsys.readouterr().out
        speed = pd.DataFrame([{"method": m, "strategy": s, "category": "all", "speedup": v} for m, s, v in [
            ("autoregressive", "autoregressive", 1.0), ("hf_assisted[default]", "hf_assisted", 1.2),
            ("svip", "svip", 1.3), ("test_margin[margin_nats=0.5]", "test_margin", 1.4)]])
        assert "best rule test_margin[margin_nats=0.5]" in targets(speed)[-1]
    finally:
        unregister("test_margin")
    assert "test_margin" not in RULES
    with pytest.raises(ConfigError, match="^margin_nats: unknown"):
        EntropyConfig(margin_nats=0.5)


def test_rule_parameters_are_declared_once():
    """A parameter shadowing a shared field, or declared twice with different defaults, is refused."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Shadow:
        theta_abs: float = 1.0

    @dataclass(frozen=True)
    class Clash:
        svip_threshold: float = 0.9

    for params in (Shadow, Clash):
        with pytest.raises(ValueError, match="register"):
            register("test_bad", params=params)(type("Bad", (StoppingCriterion,), {"should_stop": lambda s, x: False}))
        assert "test_bad" not in RULES


@pytest.mark.parametrize("field,value", [
    ("strategy", "nope"), ("entropy_type", "tsallis"), ("theta_abs", -1.0), ("theta_rel", float("nan")),
    ("max_draft_len", 0), ("max_draft_len", 2.5), ("min_draft_len", 99), ("window_size", 0),
    ("combine", "most"), ("target_acceptance", 1.5), ("confidence_threshold", -0.1), ("entropy_unit", "dits"),
    ("theta_abs", "high"), ("criteria", []),
])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        EntropyConfig(**{field: value})


def test_unknown_config_key_is_named():
    with pytest.raises(ConfigError, match="^thetaabs: unknown"):
        EntropyConfig.from_dict({"thetaabs": 1.0})


def test_rules_command_lists_every_registered_rule(capsys):
    from entspec.cli import main

    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for name, info in RULES.items():
        assert f"\n{name}  (" in f"\n{out}" and (info.threshold is None or info.threshold in out)
    assert "goodput  (Goodput, experimental)" in out
    assert main(["rules", "nope"]) == 2
    assert capsys.readouterr().err.startswith("entspec rules: error: strategy: unknown rule 'nope'")
