"""Baselines on the same folds as the hybrid: a random forest and a pure neural network.

Both predict log SOC from the covariates plus the observation depth, one row per observed
(site, layer), so they see exactly the observations the hybrid is scored on. They fit one fold
and return the SOC they predict at the fold's test observations; the registry in
:mod:`socmap.encoders` maps ``TrainConfig`` fields onto their keyword options.
"""

from __future__ import annotations

from pathlib import Path

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
    return out


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
    torch.save({"state_dict": net.state_dict(), "covariate_lo": lo, "covariate_hi": hi}, fold_dir / "model.pt")
    return out
