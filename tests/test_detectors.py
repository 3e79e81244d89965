"""Drift detector bundles: validation, latching, direction, exact restore, product defaults."""

from __future__ import annotations

import inspect
import itertools
import json
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from river.datasets import synth
from river.drift import binary
from sklearn.tree import DecisionTreeClassifier

from streaming.detectors import (
    BINARY_KINDS,
    DEFAULT_DETECTORS,
    KINDS,
    STATE_FORMAT,
    Alarm,
    DetectorBundle,
    DetectorSpec,
    parse_detector_spec,
)
from streaming.errors import ConfigError, ContractError
from streaming.state_codec import SignedStateCodec

RIVER_CLASSES = {
    "adwin": "river.drift.adwin.ADWIN",
    "ddm": "river.drift.binary.ddm.DDM",
    "eddm": "river.drift.binary.eddm.EDDM",
    "hddm_a": "river.drift.binary.hddm_a.HDDMA",
    "hddm_w": "river.drift.binary.hddm_w.HDDMW",
    "page_hinkley": "river.drift.page_hinkley.PageHinkley",
    "fhddm": "river.drift.binary.fhddm.FHDDM",
}


def bernoulli(rng: random.Random, p: float, n: int) -> list[int]:
    return [int(rng.random() < p) for _ in range(n)]


def feed(bundle: DetectorBundle, errors: Sequence[float], start: int = 0) -> list[Alarm]:
    alarms = []
    for i, error in enumerate(errors, start):
        alarms += bundle.update(error, position=i, event_time_ms=1_000 * i)
    return alarms


def bundle_of(kind: str, **params: Any) -> DetectorBundle:
    return DetectorBundle({kind: parse_detector_spec(kind, params)})


def river_class(kind: str) -> type:
    module, _, name = RIVER_CLASSES[kind].rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)  # type: ignore[no-any-return]


# ---- parsing ---------------------------------------------------------------------------
def test_kinds_map_to_the_real_river_classes() -> None:
    assert set(KINDS) == set(RIVER_CLASSES)
    for kind in KINDS:
        bundle = bundle_of(kind)
        det = bundle._slots[0].detector
        assert f"{type(det).__module__}.{type(det).__name__}" == RIVER_CLASSES[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_parse_resolves_every_constructor_parameter(kind: str) -> None:
    spec = parse_detector_spec(kind, {})
    cls = river_class(kind)
    names = list(inspect.signature(cls).parameters)
    assert sorted(spec.params) == sorted(names)
    reference = cls()
    for name, value in spec.params.items():
        if kind == "adwin" and name == "delta":
            continue
        assert getattr(reference, name) == value, name
    json.dumps(spec.params)


def test_adwin_default_delta_is_streammons_and_can_be_overridden() -> None:
    assert parse_detector_spec("adwin").params["delta"] == 1e-4
    assert parse_detector_spec("adwin", {"delta": 0.002}).params["delta"] == 0.002
    assert DEFAULT_DETECTORS["adwin"] == parse_detector_spec("adwin", {})
    assert DetectorBundle({"a": DetectorSpec()}).specs["a"].params["delta"] == 1e-4


def test_unknown_kind_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown detector kind 'kswin'; known: adwin"):
        parse_detector_spec("kswin", {})


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_parameter_names_kind_and_parameter(kind: str) -> None:
    with pytest.raises(ConfigError, match=f"kind '{kind}' has no parameter 'window_size'"):
        parse_detector_spec(kind, {"window_size": 10})


@pytest.mark.parametrize(
    ("kind", "params", "fragment"),
    [
        ("adwin", {"delta": 0}, "delta must be in (0, 1)"),
        ("adwin", {"delta": 1.5}, "delta must be in (0, 1)"),
        ("adwin", {"delta": float("nan")}, "'delta' must be a finite number"),
        ("adwin", {"delta": "small"}, "'delta' must be a finite number"),
        ("adwin", {"delta": True}, "'delta' must be a finite number"),
        ("adwin", {"clock": 0}, "clock must be >= 1"),  # river's Rust ADWIN panics on it
        ("adwin", {"clock": 32.0}, "'clock' must be an integer"),
        ("adwin", {"max_buckets": 0}, "max_buckets must be >= 1"),  # and on this
        ("ddm", {"warning_threshold": 4.0}, "drift_threshold must be >= warning_threshold"),
        ("eddm", {"alpha": 0.8, "beta": 0.9}, "need 0 < beta <= alpha < 1"),
        ("hddm_a", {"drift_confidence": 2}, "drift_confidence must be in (0, 1)"),
        ("hddm_a", {"two_sided_test": 1}, "'two_sided_test' must be a boolean"),
        ("hddm_w", {"lambda_val": 0}, "lambda_val must be in (0, 1]"),
        ("page_hinkley", {"mode": "sideways"}, "mode must be up, down or both"),
        ("page_hinkley", {"threshold": -1}, "threshold must be > 0"),
        ("page_hinkley", {"min_instances": "30"}, "'min_instances' must be an integer"),
        ("fhddm", {"confidence_level": 0}, "confidence_level must be in (0, 1)"),
        ("fhddm", {"short_window_size": 500}, "short_window_size must be None or in"),
    ],
)
def test_bad_values_are_config_errors(kind: str, params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_detector_spec(kind, params)
    assert fragment in str(info.value)
    assert f"'{kind}'" in str(info.value)


def test_good_non_default_values_are_accepted() -> None:
    assert parse_detector_spec("fhddm", {"short_window_size": 20}).params["short_window_size"] == 20
    assert parse_detector_spec("page_hinkley", {"threshold": 20}).params["threshold"] == 20
    assert parse_detector_spec("hddm_w", {"two_sided_test": True}).params["two_sided_test"]


def test_bundle_validates_its_specs() -> None:
    with pytest.raises(ConfigError, match="unknown detector kind 'nope'"):
        DetectorBundle({"x": DetectorSpec("nope", {})})
    with pytest.raises(ConfigError, match="clock must be >= 1"):
        DetectorBundle({"x": DetectorSpec("adwin", {"clock": 0})})


# ---- input checks ----------------------------------------------------------------------
def test_binary_detectors_refuse_real_errors_before_touching_any_detector() -> None:
    bundle = DetectorBundle(
        {"adwin": parse_detector_spec("adwin"), "ddm": parse_detector_spec("ddm")}
    )
    feed(bundle, [0, 1, 0])
    before = bundle.snapshot()
    with pytest.raises(ContractError, match=r"'ddm' takes a 0/1 error, got 0\.37"):
        bundle.update(0.37, position=3, event_time_ms=0)
    assert bundle.snapshot() == before
    assert not bundle.accepts_real_errors


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_errors_are_refused(bad: float) -> None:
    bundle = DetectorBundle(DEFAULT_DETECTORS)
    with pytest.raises(ContractError, match="finite error"):
        bundle.update(bad, position=0, event_time_ms=0)
    assert bundle.snapshot()["adwin"]["updates"] == 0


def test_real_valued_detectors_accept_real_errors() -> None:
    bundle = DetectorBundle(
        {"adwin": parse_detector_spec("adwin"), "ph": parse_detector_spec("page_hinkley")}
    )
    assert bundle.accepts_real_errors
    feed(bundle, [0.37, 0.12, 0.9])
    snap = bundle.snapshot()
    assert snap["adwin"]["estimation"] == pytest.approx((0.37 + 0.12 + 0.9) / 3)
    assert snap["ph"]["estimation"] == pytest.approx((0.37 + 0.12 + 0.9) / 3)


def test_an_empty_bundle_switches_detection_off() -> None:
    bundle = DetectorBundle({})
    assert feed(bundle, [0.0, 1.0, 3.5]) == []
    assert bundle.snapshot() == {}
    assert bundle.accepts_real_errors


def test_binary_kinds() -> None:
    assert {"ddm", "eddm", "hddm_a", "hddm_w", "fhddm"} == BINARY_KINDS


# ---- alarms on an abrupt error increase, river defaults ---------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_alarms_on_an_abrupt_error_increase(kind: str) -> None:
    rng = random.Random(11)
    change = 5_000
    errors = bernoulli(rng, 0.1, change) + bernoulli(rng, 0.5, 2_000)
    alarms = feed(bundle_of(kind), errors)
    after = [a for a in alarms if a.position >= change]
    assert after, f"{kind} missed the change"
    assert after[0].direction == "increase"
    assert after[0].position - change < 500
    if kind not in ("ddm", "eddm"):  # river's DDM/EDDM defaults also alarm on stationary noise
        assert [a for a in alarms if a.position < change] == []
    for alarm in alarms:
        if alarm.mean_before is not None and alarm.mean_after is not None:
            assert alarm.mean_after > alarm.mean_before


def test_river_default_adwin_also_catches_it() -> None:
    rng = random.Random(11)
    errors = bernoulli(rng, 0.1, 5_000) + bernoulli(rng, 0.5, 2_000)
    alarms = feed(bundle_of("adwin", delta=0.002), errors)
    assert alarms[0].position - 5_000 in range(500)


def test_adwin_alarm_carries_the_means_of_its_window_split() -> None:
    rng = random.Random(5)
    errors = bernoulli(rng, 0.1, 4_000) + bernoulli(rng, 0.6, 2_000)
    alarm = feed(DetectorBundle(DEFAULT_DETECTORS), errors)[0]
    assert alarm.mean_before is not None and alarm.mean_after is not None
    assert alarm.mean_before == pytest.approx(0.1, abs=0.03)
    assert alarm.mean_after > alarm.mean_before + 0.02
    assert (alarm.detector, alarm.kind, alarm.event_time_ms) == ("adwin", "adwin", 1_000 * 4_063)


# ---- direction -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("adwin", {}),
        ("hddm_a", {"two_sided_test": True}),
        ("hddm_w", {"two_sided_test": True}),
        ("page_hinkley", {}),
        ("page_hinkley", {"mode": "down"}),
    ],
)
def test_error_decrease_is_reported_as_decrease(kind: str, params: dict[str, Any]) -> None:
    rng = random.Random(2)
    change = 4_000
    errors = bernoulli(rng, 0.5, change) + bernoulli(rng, 0.1, 2_000)
    after = [a for a in feed(bundle_of(kind, **params), errors) if a.position >= change]
    assert after
    assert after[0].position - change < 500
    assert after[0].direction == "decrease"
    if after[0].mean_before is not None and after[0].mean_after is not None:
        assert after[0].mean_before > after[0].mean_after


@pytest.mark.parametrize(
    ("kind", "params"),
    [("hddm_a", {}), ("hddm_w", {}), ("page_hinkley", {"mode": "up"}), ("fhddm", {})],
)
def test_one_sided_detectors_ignore_an_error_decrease(kind: str, params: dict[str, Any]) -> None:
    for seed in range(4):
        rng = random.Random(seed)
        errors = bernoulli(rng, 0.5, 3_000) + bernoulli(rng, 0.1, 3_000)
        alarms = feed(bundle_of(kind, **params), errors)
        assert [a for a in alarms if a.position >= 3_000] == [], (kind, seed)


def test_page_hinkley_on_real_valued_errors_via_its_params() -> None:
    # regression: absolute errors whose scale triples at the change
    rng = np.random.default_rng(4)
    change = 3_000
    errors = np.abs(np.concatenate([rng.normal(0, 1, change), rng.normal(0, 3, 2_000)]))
    params = {"threshold": 30.0, "mode": "up", "min_instances": 100}
    alarms = feed(bundle_of("page_hinkley", **params), errors.tolist())
    assert alarms
    assert alarms[0].position - change in range(200)
    assert alarms[0].direction == "increase"
    # the same detector with its default threshold waits longer
    default_first = feed(bundle_of("page_hinkley", mode="up"), errors.tolist())[0]
    assert default_first.position > alarms[0].position


# ---- FHDDM -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_river_fhddm_alone_alarms_when_the_error_falls(seed: int) -> None:
    rng = random.Random(seed)
    change = 3_000
    falling = bernoulli(rng, 0.5, change) + bernoulli(rng, 0.1, change)
    rising = bernoulli(rng, 0.1, change) + bernoulli(rng, 0.5, change)

    def alarm_positions(errors: list[int]) -> list[int]:
        det = binary.FHDDM()
        positions = []
        for i, x in enumerate(errors):
            det.update(x)
            if det.drift_detected:
                positions.append(i)
        return positions

    assert [p for p in alarm_positions(falling) if change <= p < change + 100]
    # no prompt alarm on the rise (later ones are noise once the error rate is 0.5)
    assert [p for p in alarm_positions(rising) if change <= p < change + 200] == []


@pytest.mark.parametrize("seed", range(4))
def test_wrapped_fhddm_alarms_when_the_error_rises(seed: int) -> None:
    rng = random.Random(seed)
    change = 3_000
    alarms = feed(bundle_of("fhddm"), bernoulli(rng, 0.1, change) + bernoulli(rng, 0.5, change))
    after = [a for a in alarms if a.position >= change]
    assert after[0].position - change < 100
    assert after[0].direction == "increase"
    assert [a for a in alarms if a.position < change] == []


# ---- latching and snapshots ------------------------------------------------------------
def test_alarms_are_latched_and_the_drift_state_lasts_one_update() -> None:
    rng = random.Random(9)
    bundle = DetectorBundle(DEFAULT_DETECTORS)
    errors = list(itertools.chain.from_iterable(bernoulli(rng, p, 400) for p in [0.05, 0.7] * 15))
    returned: list[Alarm] = []
    states = []
    for i, error in enumerate(errors):
        new = bundle.update(error, position=i, event_time_ms=i)
        snap = bundle.snapshot()["adwin"]
        states.append(snap["state"])
        assert (snap["state"] == "drift") == bool(new)
        returned += new
    snap = bundle.snapshot()["adwin"]
    assert len(returned) > 10
    assert snap["alarms"] == len(returned)
    assert snap["updates"] == len(errors)
    assert snap["last_alarm"] == returned[-1].to_dict()
    assert snap["recent_alarms"] == [a.to_dict() for a in returned[-10:]]
    assert {a.direction for a in returned} == {"increase", "decrease"}
    assert set(states) == {"stable", "drift"}
    json.dumps(snap, allow_nan=False)


@pytest.mark.parametrize("kind", ["ddm", "hddm_a", "hddm_w"])
def test_warning_state_before_the_drift(kind: str) -> None:
    rng = random.Random(1)
    bundle = bundle_of(kind)
    states = []
    for i, error in enumerate(bernoulli(rng, 0.1, 3_000) + bernoulli(rng, 0.3, 3_000)):
        bundle.update(error, position=i, event_time_ms=i)
        states.append(bundle.snapshot()[kind]["state"])
    assert "warning" in states
    assert "drift" in states


def test_snapshot_shape() -> None:
    specs = {kind: parse_detector_spec(kind) for kind in KINDS}
    bundle = DetectorBundle(specs)
    empty = bundle.snapshot()
    assert set(empty) == set(KINDS)
    for kind, snap in empty.items():
        assert snap == {
            "kind": kind,
            "params": specs[kind].params,
            "state": "stable",
            "updates": 0,
            "alarms": 0,
            "last_alarm": None,
            "recent_alarms": [],
            "estimation": None,
        }
    feed(bundle, bernoulli(random.Random(0), 0.2, 500))
    json.dumps(bundle.snapshot(), allow_nan=False)


# ---- exact restore through the signed codec --------------------------------------------
CODEC = SignedStateCodec(b"detector-contract-test-key")


def contract_streams(real: bool) -> tuple[list[float], list[float]]:
    rng = random.Random(2024)
    if real:

        def seg(p: float, n: int) -> list[float]:
            return [min(1.0, rng.random() * 2 * p) for _ in range(n)]
    else:

        def seg(p: float, n: int) -> list[float]:
            return [float(x) for x in bernoulli(rng, p, n)]

    first = seg(0.1, 2_000) + seg(0.5, 2_000)
    second = seg(0.5, 1_000) + seg(0.05, 1_500) + seg(0.6, 1_500)
    return first, second


CONTRACT_CASES = [
    *[({kind: DetectorSpec(kind)}, False) for kind in KINDS],
    ({"adwin": DetectorSpec("adwin")}, True),
    ({"ph": DetectorSpec("page_hinkley")}, True),
    ({f"d_{kind}": DetectorSpec(kind) for kind in KINDS}, False),
]


@pytest.mark.parametrize(
    ("specs", "real"),
    CONTRACT_CASES,
    ids=[*KINDS, "adwin-real", "page_hinkley-real", "all-kinds"],
)
def test_bundle_survives_the_signed_codec_exactly(
    specs: dict[str, DetectorSpec], real: bool
) -> None:
    first, second = contract_streams(real)
    original = DetectorBundle(specs)
    feed(original, first)
    restored = CODEC.decode(CODEC.encode(original, STATE_FORMAT), STATE_FORMAT)
    assert isinstance(restored, DetectorBundle)
    assert restored is not original
    assert restored.snapshot() == original.snapshot()
    for i, error in enumerate(second, len(first)):
        got = restored.update(error, position=i, event_time_ms=i)
        want = original.update(error, position=i, event_time_ms=i)
        assert got == want, i
        assert restored.snapshot() == original.snapshot(), i
    # not vacuous: every detector alarmed after the restore
    for name, snap in original.snapshot().items():
        last = snap["last_alarm"]
        assert last is not None and last["position"] >= len(first), name


# ---- product check: abrupt concept change in a real model's errors ---------------------
FEATURES = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")


def take(stream: Iterator[tuple[dict[str, float], int]], n: int) -> tuple[Any, Any]:
    rows = list(itertools.islice(stream, n))
    x = np.array([[row[f] for f in FEATURES] for row, _ in rows])
    y = np.array([label for _, label in rows])
    return x, y


def agrawal_errors(seed: int, segments: Sequence[tuple[int, int]]) -> list[list[int]]:
    """0/1 errors of a tree trained on Agrawal function 0, for (function, n) segments."""
    gen = synth.Agrawal(classification_function=0, seed=seed, perturbation=0.1)
    stream = iter(gen)
    x, y = take(stream, 5_000)
    model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y)
    out = []
    for function, n in segments:
        gen.classification_function = function  # the running generator reads it per sample
        x, y = take(stream, n)
        out.append((model.predict(x) != y).astype(int).tolist())
    return out


def check_stationary(seed: int) -> None:
    (errors,) = agrawal_errors(seed, [(0, 100_000)])
    assert 0.05 < float(np.mean(errors)) < 0.2  # a realistic, imperfect model
    assert feed(DetectorBundle(DEFAULT_DETECTORS), errors) == []


def test_default_bundle_no_alarm_on_100k_stationary_events() -> None:
    check_stationary(seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 10))
def test_default_bundle_no_alarm_on_100k_stationary_events_more_seeds(
    seed: int, request: pytest.FixtureRequest
) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("about 4 s per seed: run with -m slow")
    check_stationary(seed)


@pytest.mark.parametrize("seed", range(5))
def test_default_bundle_catches_an_agrawal_concept_switch(seed: int) -> None:
    change = 5_000
    before, after = agrawal_errors(seed, [(0, change), (2, 5_000)])
    assert float(np.mean(after)) > float(np.mean(before)) + 0.3
    alarms = feed(DetectorBundle(DEFAULT_DETECTORS), before + after)
    assert alarms
    assert alarms[0].position >= change  # nothing before the switch
    assert alarms[0].direction == "increase"
    assert alarms[0].position - change < 500
