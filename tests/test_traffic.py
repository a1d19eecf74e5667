"""The traffic config, the shadow queue and the canary gates, in process (issue 27). The end-to-end rollouts
against a server are in test_canary.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tfsb.client.canary import Gates, evidence, judge, observed
from tfsb.errors import InvalidArgumentError, UnavailableError
from tfsb.server.admission import MemoryBudget
from tfsb.server.metrics import Metrics
from tfsb.server.traffic import Traffic, TrafficConfig, compare_tensors
from tfsb.wire.evidence import summary
from tfsb.wire.spec import Spec


def test_the_config_is_validated_and_its_digest_ignores_key_order():
    a = TrafficConfig.parse('{"models": {"m": {"shadow": {"to": "canary", "fraction": 0.1}, '
                            '"split": {"label": "r", "weights": {"stable": 9, "canary": 1}}}}}')
    b = TrafficConfig.parse('{"models": {"m": {"split": {"weights": {"stable": 9, "canary": 1}, "label": "r"}, '
                            '"shadow": {"fraction": 0.1, "to": "canary"}}}}')
    assert a.digest == b.digest and a.models["m"].shadow.to == "canary"
    assert TrafficConfig.parse('{"models": {"m": {"shadow": {"to": 3, "fraction": 1}}}}').models["m"].shadow.to == "3"
    for bad, needle in (('[]', "one key"), ('{"models": {"m": {"shadow": {"to": "c"}}}}', "fraction"),
                        ('{"models": {"m": {"shadow": {"to": 0, "fraction": 0.5}}}}', "> 0"),
                        ('{"models": {"m": {"split": {"label": "r", "weights": {"r": 1}}}}}', "cannot be one"),
                        ('{"models": {"m": {"split": {"label": "r", "weights": {"a": -1}}}}}', ">= 0"),
                        ('{"models": {"m": {"mirror": {}}}}', '"shadow" and/or "split"'),
                        ('{"models": {"m": {"split": {"label": "r", "weights": {"a": Infinity}}}}}', ">= 0"),
                        ('{"models": {"m": {"shadow": {"to": "c", "fraction": NaN}}}}', "fraction"),
                        ("[" * 100_000, "nested too deeply"),
                        (b"\xff\xfe{", "not JSON")):
        with pytest.raises(InvalidArgumentError, match=needle):
            TrafficConfig.parse(bad)


def _traffic(labels=None, **kw) -> Traffic:
    return Traffic(Metrics(), lambda name: dict(labels or {}), **kw)


def test_the_split_label_routes_by_weight_and_config_labels_win():
    t = _traffic()
    t.apply(TrafficConfig.parse('{"models": {"m": {"split": {"label": "r", "weights": {"stable": 3, "2": 1}}}}}'),
            "test")
    entry = t.entry("m")
    picks = [entry.split.pick(r) for r in np.linspace(0, 0.999, 1000)]
    assert picks.count("stable") == 750 and picks.count("2") == 250
    routed = {t.route(Spec("m", None, "r"), entry) for _ in range(200)}
    assert routed == {Spec("m", None, "stable"), Spec("m", 2, None)}
    assert t.route(Spec("m", None, "other"), entry) == Spec("m", None, "other")  # other labels untouched
    shadowed = _traffic(labels={"r": 7})  # the models.config defines "r": TF Serving's meaning wins
    shadowed.apply(t.config, "test")
    assert shadowed.route(Spec("m", None, "r"), shadowed.entry("m")) == Spec("m", None, "r")


def test_output_comparison():
    live = {"y": np.array([[1.0, 2.0]], np.float32), "k": np.array([b"a"], object)}
    assert compare_tensors(live, {"y": live["y"] + 0.5, "k": np.array([b"a"], object)}) == (0.5, 0.5, 1, 0)
    d, r, agree, disagree = compare_tensors(live, {"y": np.zeros((2, 2), np.float32), "k": np.array([b"b"], object)})
    assert d == r == float("inf") and (agree, disagree) == (0, 1)
    assert summary({"requests": 4, "abs_diff": [["0.1", 0], ["+Inf", 4]]})["max_abs_diff"] == "inf"


def test_a_full_shadow_queue_drops_instead_of_waiting_and_a_failing_shadow_is_only_counted():
    metrics = Metrics()
    t = Traffic(metrics, lambda name: {"canary": 2}, max_queue=2)
    t.apply(TrafficConfig.parse('{"models": {"m": {"shadow": {"to": "canary", "fraction": 1}}}}'), "test")
    release, started = threading.Event(), threading.Event()

    def slow_run(spec):
        started.set()
        release.wait(10)
        return 2, {"y": np.zeros(1)}, 0.001

    queued = [t.mirror("m", t.entry("m"), 1, 8, MemoryBudget(0), slow_run, lambda out: (0.0, 0.0, 0, 0))
              for _ in range(10)]  # returns at once although the shadow call blocks
    assert queued == [True, True] + [False] * 8
    started.wait(5)
    release.set()
    t.stop()
    counts = {(s["labels"]["status"]): s["value"] for s in _samples(metrics, "requests")}
    assert counts.get("DROPPED") == 8

    def failing(spec):
        raise UnavailableError("canary is gone")

    t2 = Traffic(Metrics(), lambda name: {"canary": 2})
    t2.apply(t.config, "test")
    t2._run_shadow("m", 1, Spec("m", None, "canary"), failing, None)  # never raises into the live path
    assert {s["labels"]["status"] for s in _samples(t2.metrics, "requests")} == {"UNAVAILABLE"}


def test_the_default_shadow_queue_holds_8_calls():
    t = _traffic(labels={"canary": 2})
    t.apply(TrafficConfig.parse('{"models": {"m": {"shadow": {"to": "canary", "fraction": 1}}}}'), "test")
    release = threading.Event()

    def blocked(spec):
        release.wait(10)
        return 2, {}, 0.0

    queued = [t.mirror("m", t.entry("m"), 1, 8, MemoryBudget(0), blocked, lambda o: (None, None, 0, 0))
              for _ in range(12)]
    release.set()
    t.stop()
    assert queued.count(True) == 8


def test_the_shadow_respects_the_memory_budget():
    t = _traffic(labels={"canary": 2})
    t.apply(TrafficConfig.parse('{"models": {"m": {"shadow": {"to": "canary", "fraction": 1}}}}'), "test")
    budget = MemoryBudget(100)
    assert not t.mirror("m", t.entry("m"), 1, 1000, budget, lambda s: None, lambda o: None)
    assert t.pending() == 0


def _samples(metrics, what):
    return [{"labels": labels, "value": value} for fam, name, labels, value in metrics.traffic_samples()
            if name.endswith("_total") and what in fam]


def _reading(ok, errors, p99_le, abs_le=None):
    buckets = [[str(le), ok if le >= p99_le else 0] for le in (1000.0, 10000.0, 100000.0)] + [["+Inf", ok]]
    side = {"requests": ok, "errors": errors, "latency_us": buckets}
    if abs_le is not None:
        side["abs_diff"] = [[str(le), ok if le >= abs_le else 0] for le in (1e-4, 1e-3, 1.0)] + [["+Inf", ok]]
    return side


def test_the_gates():
    before = [{}]
    good = [{"live": {"1": _reading(100, 0, 1000.0)}, "shadow": {"2": _reading(100, 0, 1000.0, 1e-4)}}]
    assert judge(observed(before, good), 1, 2, Gates(), phase="shadow") == []
    biased = [{"live": {"1": _reading(100, 0, 1000.0)}, "shadow": {"2": _reading(100, 0, 1000.0, 1.0)}}]
    assert any("outputs differ" in f for f in judge(observed(before, biased), 1, 2, Gates(), phase="shadow"))
    slow = [{"live": {"1": _reading(100, 0, 1000.0), "2": _reading(100, 0, 100000.0)}}]
    assert any("p99" in f for f in judge(observed(before, slow), 1, 2, Gates(), phase="split"))
    failing = [{"live": {"1": _reading(100, 0, 1000.0), "2": _reading(90, 10, 1000.0)}}]
    assert any("error rate" in f for f in judge(observed(before, failing), 1, 2, Gates(), phase="split"))
    # one slow answer among a few dozen is not a slow canary: the tail compared has 5 answers above it
    one_slow = [{"live": {"1": _reading(50, 0, 1000.0), "2": _reading(49, 0, 1000.0)}}]
    one_slow[0]["live"]["2"]["latency_us"] = [["1000.0", 49], ["10000.0", 49], ["100000.0", 50], ["+Inf", 50]]
    one_slow[0]["live"]["2"]["requests"] = 50
    assert judge(observed(before, one_slow), 1, 2, Gates(), phase="split") == []
    idle = [{"live": {"1": _reading(100, 0, 1000.0), "2": _reading(3, 0, 1000.0)}}]
    assert any("insufficient" in f for f in judge(observed(before, idle), 1, 2, Gates(), phase="split"))
    # two servers' evidence is summed, and a step is judged on the difference between its readings
    two = evidence([{}, {}], [{"live": {"2": _reading(10, 0, 1000.0)}}, {"live": {"2": _reading(15, 0, 1000.0)}}])
    assert two["live"]["2"]["requests"] == 25
    step = evidence(good, [{"live": {"1": _reading(150, 0, 1000.0)}, "shadow": {"2": _reading(130, 0, 1000.0, 1e-4)}}])
    assert step["shadow"]["2"]["requests"] == 30 and step["live"]["1"]["requests"] == 50


def test_classifications_agree_by_top_class():
    from tensorflow_serving.apis import classification_pb2

    from tfsb.server.traffic import compare_classifications

    def result(*rows):
        r = classification_pb2.ClassificationResult()
        for row in rows:
            c = r.classifications.add()
            for label, score in row:
                c.classes.add(label=label, score=score)
        return r

    live = result([("a", 0.9), ("b", 0.1)], [("a", 0.2), ("b", 0.8)], [("", 0.3), ("", 0.7)])
    same = result([("a", 0.6), ("b", 0.4)], [("a", 0.4), ("b", 0.6)], [("", 0.1), ("", 0.9)])
    assert compare_classifications(live, same) == (3, 0)  # scores differ, the top classes do not
    flipped = result([("a", 0.4), ("b", 0.6)], [("a", 0.2), ("b", 0.8)])
    assert compare_classifications(live, flipped) == (1, 2)  # one flipped, one missing


def test_a_step_is_held_until_the_gates_have_evidence(monkeypatch):
    """Sparse traffic: the hold time passes with 5 canary answers; the step goes on until 20 (min_requests),
    not failing a good canary for want of evidence, and gives up at the longest hold."""
    from tfsb.client import canary

    calls = {"n": 0}

    def slow_readings(servers, model):
        calls["n"] += 1
        return [{"live": {"2": _reading(5 * calls["n"], 0, 1000.0)}}]

    monkeypatch.setattr(canary, "readings", slow_readings)
    plan = canary.Plan("m", 2, hold_s=0.01, max_hold_s=30.0)
    held, seen = canary._hold(plan, [], "split")
    assert 20 <= seen["live"]["2"]["requests"] < 30 and held < 30

    calls["n"] = 0
    monkeypatch.setattr(canary, "readings", lambda servers, model: [{"live": {"2": _reading(1, 0, 1000.0)}}])
    plan = canary.Plan("m", 2, hold_s=0.01, max_hold_s=0.2)  # nobody calls the canary: the step ends anyway
    held, seen = canary._hold(plan, [], "split")
    assert 0.2 <= held < 5 and judge(seen, 1, 2, Gates(), phase="split")[0].startswith("insufficient evidence")
