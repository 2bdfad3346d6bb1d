"""The experiments run end to end (tiny configurations) and write the documented files."""
import json

import pytest

from experiments import location_toy, red_green


def check_layout(path, name):
    d = json.load(open(path))
    assert d["experiment"] == name
    assert {"config", "environment", "results", "paper"} <= set(d)
    assert {"torch", "device", "threads", "date"} <= set(d["environment"])
    for variant, metrics in d["results"].items():
        for m in metrics.values():
            assert {"mean", "std", "runs"} <= set(m)
    return d


def test_location_toy_runs(tmp_path):
    location_toy.main(["--seeds", "2", "--steps", "60", "--out", str(tmp_path)])
    d = check_layout(tmp_path / "location_toy.json", "location_toy")
    # F-Conv: both images give the same pooled value, so accuracy is exactly chance
    assert d["results"]["full_zero"]["accuracy"]["runs"] == [50.0, 50.0]
    assert d["results"]["full_zero"]["pooled_gap"]["mean"] == 0.0
    assert (tmp_path / "location_toy.md").exists() and (tmp_path / "location_toy.png").exists()


def test_red_green_runs(tmp_path, monkeypatch):
    from fullconv.data import make_red_green_splits
    monkeypatch.setattr(red_green, "make_red_green_splits",
                        lambda n_train, n_val, n_test, seed: make_red_green_splits(200, 100, 100, seed))
    red_green.main(["--quick", "--seeds", "1", "--out", str(tmp_path)])
    d = check_layout(tmp_path / "red_green.json", "red_green")
    assert set(d["results"]) == set(red_green.VARIANTS)
    # full convolution cannot tell the halves apart: similar and dissimilar agree
    full = d["results"]["full_zero"]
    assert full["similar"]["mean"] == pytest.approx(full["dissimilar"]["mean"], abs=1e-9)
    assert (tmp_path / "red_green.png").exists()
