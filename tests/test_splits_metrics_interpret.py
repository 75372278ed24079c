import numpy as np
import pytest

from socmap import metrics
from socmap.interpret import parameter_recovery, suggest_symbolic
from socmap.splits import block_ids, make_folds


def test_block_folds_are_disjoint_and_spatial():
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-120, -70, 600), rng.uniform(26, 48, 600)
    folds = make_folds(lon, lat, 5, "block2deg", seed=1)
    blocks = block_ids(lon, lat)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(600))  # every site tested exactly once
    for f in folds:
        assert not set(f.train) & set(f.test) and not set(f.val) & set(f.test) and not set(f.train) & set(f.val)
        assert not set(blocks[f.test]) & set(blocks[f.train])  # no 2° block on both sides
    with pytest.raises(ValueError, match="unknown split"):
        make_folds(lon, lat, 5, "kriging")


def test_random_folds_cover_all_sites_once():
    folds = make_folds(np.zeros(100), np.zeros(100), 5, "random", seed=0)
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(100))
    assert all(len(f.val) > 0 and len(f.train) > 50 for f in folds)


def test_skill_scores_known_answers():
    obs = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    assert metrics.nse(obs, obs) == 1.0
    assert metrics.nse(obs, np.full(5, 2.5)) == pytest.approx(0.0)
    assert metrics.rmse(obs, obs + 1.0) == pytest.approx(1.0)
    assert metrics.nse_log(np.array([1.0, 10.0, 100.0]), np.array([1.0, 10.0, 100.0])) == 1.0
    assert metrics.pearson_r(obs, 2 * obs + 3) == pytest.approx(1.0)


def test_symbolic_suggestion_finds_the_generating_family():
    x = np.linspace(0, 40, 101)
    fit = suggest_symbolic(x, 0.3 * ((x - 0) / 40) ** 2 - 0.1)
    assert fit.kind == "quadratic" and fit.r2 > 0.999
    lin = suggest_symbolic(x, 2.0 * x + 1.0)
    assert lin.kind == "linear" and lin.r2 > 0.999999
    noisy = suggest_symbolic(x, np.sin(x))
    assert noisy.r2 < 0.9  # nothing in the library fits a sine over many periods


def test_parameter_recovery_is_per_parameter_not_flattened():
    truth = np.full((50, 21), 0.5)
    truth[:, 9] = np.linspace(0.2, 0.8, 50)
    pred = truth.copy()
    pred[:, 9] = truth[:, 9][::-1]  # anti-correlated prediction of tau4s3
    rec = parameter_recovery(truth, pred, ["tau4s3"])
    assert rec["tau4s3"]["corr"] == pytest.approx(-1.0) and rec["tau4s3"]["r2"] < -2
