"""The classifier on the labelled tuning set (bench/routing/): a change that makes it
route complex prompts down, or lose accuracy or savings, fails here.

The saving is checked against the most any router can get on this set with these
prices (every prompt on its labelled tier: 37.7 %), not against the issue's 40 %,
which this set's label mix cannot reach; bench/routing/README.md has the numbers."""

import importlib.util
import sys
from pathlib import Path

EVALUATE = Path(__file__).resolve().parents[2] / "bench" / "routing" / "evaluate.py"


def load_evaluate():
    spec = importlib.util.spec_from_file_location("routing_evaluate", EVALUATE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_it_meets_the_quality_and_saving_bounds_on_the_tuning_set():
    report = load_evaluate().evaluate("tuning")
    assert report.total >= 300
    assert report.complex_routed_down < 0.05
    assert report.accuracy >= 0.85
    assert report.saving >= 0.9 * report.oracle_saving
