"""Baselines on the same folds as the hybrid: a random forest and a pure neural network.

Both predict log SOC from the covariates plus the observation depth, one row per observed
(site, layer), so they see exactly the observations the hybrid is scored on. They fit one fold
and return the SOC they predict at the fold's test observations; the registry in
:mod:`socmap.encoders` maps ``TrainConfig`` fields onto their keyword options.

Each fold's model is saved in its fold folder (the random forest as ``model.joblib``, the NN as
``model.pt``) and read back by :func:`load_baseline_model` as a :class:`BaselineModel`, so
``socmap predict`` and ``socmap map`` can use baselines like hybrid runs (SOC at any depth,
stocks; no parameters).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from socmap.data.sites import SiteData
from socmap.nets import PureNN
from socmap.splits import Fold


def observation_table(data: SiteData, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (site, layer) of sites ``idx`` with finite positive SOC.

    Returns
    -------
    features : ndarray [n, C + 1]
        Covariates (physical units) then the observation depth (m).
    log_soc : ndarray [n]
        log of SOC density (g C m-3).
    site_pos, layer_pos : ndarray [n]
        Position of each row in ``idx`` and its layer index.
    """
    d, y = data.depth_m[idx], data.soc_g_m3[idx]
    si, li = np.nonzero(np.isfinite(y) & np.isfinite(d) & (y > 0))
    feats = np.column_stack([data.covariates[idx][si], d[si, li]])
    return feats, np.log(y[si, li]), si, li


def fit_rf(data: SiteData, fold: Fold, fold_dir: Path, device: torch.device, progress: bool = True, *,
           trees: int, seed: int, threads: int | None) -> np.ndarray:
    """Random forest on the fold's training and validation sites; SOC (g C m-3) at the test observations [n_test, L].

    ``threads`` of None uses 2 jobs.
    """
    from sklearn.ensemble import RandomForestRegressor

    fold_dir.mkdir(parents=True, exist_ok=True)
    # a forest does not early-stop, so the validation sites train it too
    x_tr, y_tr, _, _ = observation_table(data, np.concatenate([fold.train, fold.val]))
    x_te, _, si, li = observation_table(data, fold.test)
    out = np.full(data.soc_g_m3[fold.test].shape, np.nan)
    rf = RandomForestRegressor(n_estimators=trees, min_samples_leaf=5, n_jobs=threads or 2, random_state=seed)
    rf.fit(x_tr, y_tr)
    out[si, li] = np.exp(rf.predict(x_te))
    _save_forest(fold_dir / "model.joblib", rf, data.covariate_names)
    return out


def _save_forest(path: Path, forest: Any, covariate_names: Sequence[str]) -> None:
    """The fitted forest with its covariate names, written atomically (compressed: forests are large)."""
    import joblib

    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        joblib.dump({"forest": forest, "covariate_names": list(covariate_names)}, tmp, compress=3)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fit_nn(data: SiteData, fold: Fold, fold_dir: Path, device: torch.device, progress: bool = True, *,
           hidden: list[int], dropout: float, weight_decay: float, batch_size: int, epochs: int, patience: int,
           seed: int) -> np.ndarray:
    """Pure NN (:class:`~socmap.nets.PureNN`) with early stopping on the validation sites.

    Trains at most ``2 * epochs`` epochs on batches of ``max(32, 4 * batch_size)`` observations
    (an observation row is much cheaper than a hybrid site), saves ``fold_dir/model.pt`` and
    returns SOC (g C m-3) at the test observations [n_test, L].
    """
    fold_dir.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, _, _ = observation_table(data, fold.train)
    x_te, _, si, li = observation_table(data, fold.test)
    out = np.full(data.soc_g_m3[fold.test].shape, np.nan)
    torch.manual_seed(seed * 1000 + fold.index)
    lo, hi = data.scaling_range()
    lo_t = torch.as_tensor(lo, dtype=torch.float32, device=device)
    span = torch.as_tensor(hi, dtype=torch.float32, device=device) - lo_t
    net = PureNN(len(lo), hidden=hidden, dropout=dropout, target="log").to(device)
    net.set_target_stats(float(y_tr.mean()), float(y_tr.std()))
    x_va, y_va, _, _ = observation_table(data, fold.val)

    def tensors(x: np.ndarray, y: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        xt = torch.as_tensor(x, dtype=torch.float32, device=device)
        cov = (xt[:, :-1] - lo_t) / span
        return cov, xt[:, -1], (None if y is None else torch.as_tensor(y, dtype=torch.float32, device=device))

    cov_tr, dep_tr, yt = tensors(x_tr, y_tr)
    cov_va, dep_va, yv = tensors(x_va, y_va)
    zt = (yt - net.target_mean) / net.target_std
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=weight_decay)
    best, best_state, bad = float("inf"), None, 0
    batch = max(32, batch_size * 4)
    for epoch in tqdm(range(epochs * 2), desc=f"nn fold {fold.index}", disable=None if progress else True, leave=False):
        net.train()
        perm = torch.as_tensor(np.random.default_rng([seed, fold.index, epoch]).permutation(len(zt)), device=device)
        for start in range(0, len(perm), batch):
            b = perm[start : start + batch]
            if len(b) < 2:
                continue
            loss = ((net(cov_tr[b], dep_tr[b]).squeeze(-1) - zt[b]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            v = float(((net(cov_va, dep_va).squeeze(-1) - (yv - net.target_mean) / net.target_std) ** 2).mean())
        if v < best - 1e-6:
            best, bad, best_state = v, 0, {k: t.clone() for k, t in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    cov_te, dep_te, _ = tensors(x_te)
    with torch.no_grad():
        z = net(cov_te, dep_te).squeeze(-1)
        out[si, li] = torch.exp(z * net.target_std + net.target_mean).cpu().numpy()
    tmp = fold_dir / f".model.pt.tmp-{os.getpid()}"
    torch.save({"state_dict": net.state_dict(), "covariate_lo": lo, "covariate_hi": hi, "hidden": list(hidden),
                "dropout": float(dropout), "covariate_names": list(data.covariate_names)}, tmp)
    os.replace(tmp, fold_dir / "model.pt")
    return out


# ----------------------------------------------------------------------------------------
# fitted baselines, read back from a run folder
# ----------------------------------------------------------------------------------------

class BaselineModel:
    """One fold's fitted baseline: SOC (g C m-3) from covariates (physical units) and depth (m).

    Attributes
    ----------
    covariate_names : tuple of str
        The covariates, in input order.
    """

    covariate_names: tuple[str, ...]

    def soc_at(self, covariates: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        """SOC density (g C m-3) [N, D] at ``depth_m`` [N, D] (m; NaN gives NaN) of N cells with
        ``covariates`` [N, C]."""
        covariates = np.asarray(covariates, dtype=np.float64)
        depth_m = np.asarray(depth_m, dtype=np.float64)
        out = np.full(depth_m.shape, np.nan)
        rows, cols = np.nonzero(np.isfinite(depth_m) & np.isfinite(covariates).all(1)[:, None])
        if rows.size:
            out[rows, cols] = np.exp(self._log_soc(covariates[rows], depth_m[rows, cols]))
        return out

    def _log_soc(self, covariates: np.ndarray, depth_m: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class ForestModel(BaselineModel):
    """The random forest of one fold (log SOC from ``[covariates, depth_m]``)."""

    def __init__(self, forest: Any, covariate_names: Sequence[str]) -> None:
        self.forest, self.covariate_names = forest, tuple(covariate_names)
        self.forest.n_jobs = 1  # prediction runs inside mapping workers, one thread each

    def _log_soc(self, covariates: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        return self.forest.predict(np.column_stack([covariates, depth_m]))


class NetworkModel(BaselineModel):
    """The pure NN of one fold (:class:`~socmap.nets.PureNN`, covariates scaled by the training range)."""

    def __init__(self, net: PureNN, lo: np.ndarray, hi: np.ndarray, covariate_names: Sequence[str]) -> None:
        self.net, self.covariate_names = net.eval(), tuple(covariate_names)
        self.lo, self.span = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)

    def _log_soc(self, covariates: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        x = torch.as_tensor((covariates - self.lo) / self.span, dtype=torch.float32)
        with torch.no_grad():
            z = self.net(x, torch.as_tensor(depth_m, dtype=torch.float32))
        return (z.double() * self.net.target_std.double() + self.net.target_mean.double()).numpy()


def load_baseline_model(encoder: str, path: Path, config: dict, covariate_names: Sequence[str] | None) -> BaselineModel:
    """Read the fold model ``path`` of an ``encoder`` (``rf`` | ``nn``) run.

    ``config`` is the run's config (``run.json`` ``config``: the NN's ``mlp_hidden`` and
    ``dropout`` for models saved before they were stored with it); ``covariate_names`` the run's
    covariates (``run.json`` ``data.covariates``) for models saved without them. Any read error
    of the file propagates.
    """
    if encoder == "rf":
        import joblib

        saved = joblib.load(path)
        return ForestModel(saved["forest"], saved.get("covariate_names") or covariate_names or ())
    if encoder == "nn":
        saved = torch.load(path, map_location="cpu", weights_only=False)
        lo, hi = np.asarray(saved["covariate_lo"]), np.asarray(saved["covariate_hi"])
        net = PureNN(len(lo), hidden=saved.get("hidden", config.get("mlp_hidden", [128, 128])),
                     dropout=saved.get("dropout", config.get("dropout", 0.0)), target="log")
        net.load_state_dict(saved["state_dict"])
        return NetworkModel(net, lo, hi, saved.get("covariate_names") or covariate_names or ())
    raise ValueError(f"no baseline model reader for encoder {encoder!r}")
