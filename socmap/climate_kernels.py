"""Compiled passes of the climate-forcing derivation (:mod:`socmap.climate_forcing`, docs/model.md §5.1).

Why: deriving a cell's forcing made NumPy walk its [12, 20] fields ~20 times (one pass per
operation, each a fresh temporary or an in-place sweep), and the thaw-depth search built
arg-max and gather temporaries over them; per cell of a map that cost more than the CLM5 solve
it feeds (issue 17). These kernels fuse the element-wise chains into single passes over the
sites-innermost [12, 20, N] arrays, search the thaw front in one, and form the soil-temperature
wave without a BLAS call. The logarithm of the water
scalar stays a NumPy call between two passes: NumPy's is vectorised, numba's (without SVML) is
a scalar libm call per value.

The water and thaw kernels repeat the same floating-point operations in the same order as the
NumPy formulas they replace (``error_model="numpy"``, no fast-math), so results are bitwise the
same; the wave sums its 12 terms in month order, which a BLAS product does not promise (agreement
to rounding). ``tests/test_climate_kernels.py`` checks both against those formulas.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(nogil=True, cache=True, error_model="numpy", boundscheck=False)
#: Unsigned site indices let the compiler drop the negative-index wrap and vectorise (as in
#: :mod:`socmap.clm5.kernels`).
_u = numba.uint64


@_jit
def _thaw_depth(t, z, t_freeze, no_frost, out):
    """Thaw depth per site and month into ``out`` [N, M] from ``t`` [M, J, N] (K) at depths ``z`` [J]."""
    n_months, n_layers, n = t.shape
    first = np.empty(n, np.int64)
    for m in range(n_months):
        first[:] = n_layers  # "no frozen node"
        for j in range(n_layers - 1, -1, -1):  # upwards: the last hit is the shallowest frozen node
            for i in range(_u(n)):
                if t[m, j, i] <= t_freeze:
                    first[i] = j
        for i in range(_u(n)):
            f = first[i]
            if f == n_layers:
                out[i, m] = no_frost
            elif f == 0:
                out[i, m] = 0.0
            else:
                hi, lo = t[m, f - 1, i], t[m, f, i]
                frac = (hi - t_freeze) / (hi - lo) if hi > lo else 0.0
                out[i, m] = z[f - 1] + min(max(frac, 0.0), 1.0) * (z[f] - z[f - 1])


def thaw_depth(soil_temp_sites_last: np.ndarray, depth_m: np.ndarray, t_freeze_k: float, no_frost_m: float) -> np.ndarray:
    """First ``t_freeze_k`` isotherm below the surface per site and month, [N, M] (m).

    ``soil_temp_sites_last`` [M, J, N] (K, float64; copied once if not C-contiguous), ``depth_m``
    [J] increasing. 0 where the top node is frozen, ``no_frost_m`` where no node is; otherwise
    linear between the first frozen node and the thawed node above it
    (:func:`socmap.soil_temperature.thaw_depth_m` has the definition).
    """
    t = np.ascontiguousarray(soil_temp_sites_last, dtype=np.float64)
    out = np.empty((t.shape[2], t.shape[0]))
    _thaw_depth(t, np.ascontiguousarray(depth_m, dtype=np.float64), float(t_freeze_k), float(no_frost_m), out)
    return out


@_jit
def _wave_response(op, air, offset, out):
    """``out[m, j, i] = Σ_a op[a, m, j] air[a, i] + offset[i]`` (a = 0..11 in order), ``out`` [12, J, N].

    The 12 terms are written out: one store per value, the sum in registers (a loop over the months
    around the site loop stored every partial sum and ran 3x slower)."""
    n_months, n_layers = op.shape[1], op.shape[2]
    a0, a1, a2, a3, a4, a5 = air[0], air[1], air[2], air[3], air[4], air[5]
    a6, a7, a8, a9, a10, a11 = air[6], air[7], air[8], air[9], air[10], air[11]
    for m in range(n_months):
        for j in range(n_layers):
            c = op[:, m, j]
            c0, c1, c2, c3, c4, c5 = c[0], c[1], c[2], c[3], c[4], c[5]
            c6, c7, c8, c9, c10, c11 = c[6], c[7], c[8], c[9], c[10], c[11]
            row = out[m, j]
            for i in range(_u(air.shape[1])):
                row[i] = (c0 * a0[i] + c1 * a1[i] + c2 * a2[i] + c3 * a3[i] + c4 * a4[i] + c5 * a5[i] + c6 * a6[i]
                          + c7 * a7[i] + c8 * a8[i] + c9 * a9[i] + c10 * a10[i] + c11 * a11[i]) + offset[i]


def wave_response(operator: np.ndarray, air_temp_c: np.ndarray, offset_k: np.ndarray) -> np.ndarray:
    """The soil-temperature wave [12, J, N] (sites innermost) of
    :func:`socmap.soil_temperature.soil_temperature_k`: the linear response ``operator``
    [12 (air months), 12, J] to the air series ``air_temp_c`` [N, 12] (any layout), plus
    ``offset_k`` [N] (the surface offset and the freezing point, K).

    Why not a BLAS product: the product is small (12 terms per value) and NumPy's OpenBLAS,
    left at its default of one thread per core, keeps its other threads spinning after every
    call, which doubled the CPU seconds of an in-process ``socmap predict``; this loop also
    adds the offset in the same pass.
    """
    op = np.ascontiguousarray(operator, dtype=np.float64)
    if op.shape[:2] != (12, 12) or np.shape(air_temp_c)[1:] != (12,):
        raise ValueError(f"wave_response needs a [12, 12, J] operator and [N, 12] air temperatures; got {op.shape}, {np.shape(air_temp_c)}")
    air = np.ascontiguousarray(np.asarray(air_temp_c, dtype=np.float64).T)
    out = np.empty((op.shape[1], op.shape[2], air.shape[1]))
    _wave_response(op, air, np.ascontiguousarray(offset_k, dtype=np.float64), out)
    return out


@_jit
def _moisture_ratio(monthly, annual, wz, wet_ratio, floor, out):
    """``max((r_m e_j + R (1 - e_j)) / wet_ratio, floor)`` into ``out`` [M, J, N]; ``monthly`` [M, N]."""
    n_months, n_layers, n = out.shape
    for m in range(n_months):
        for j in range(n_layers):
            e = wz[j]
            keep = 1.0 - e
            for i in range(_u(n)):
                out[m, j, i] = max((monthly[m, i] * e + annual[i] * keep) / wet_ratio, floor)


@_jit
def _water_from_log_ratio(w, exponent, offset, scale, low, wet, wet_value):
    """In place on ``w`` [M, J, N] = log ratio: ``clip((w b + c) / d, low, 1)``, ``wet_value`` at ``wet`` [N] sites."""
    n_months, n_layers, n = w.shape
    for m in range(n_months):
        for j in range(n_layers):
            for i in range(_u(n)):
                v = min(max((w[m, j, i] * exponent + offset) / scale, low), 1.0)
                w[m, j, i] = wet_value if wet[i] else v


def water_scalar(monthly_ratio: np.ndarray, annual_ratio: np.ndarray, memory_weight: np.ndarray, wet_ratio: float,
                 exponent: float, offset: float, scale: float, low: float, wetland: np.ndarray,
                 wetland_value: float) -> np.ndarray:
    """The water scalar [12, J, N] (sites innermost) of :func:`socmap.climate_forcing.water_scalar_from_climate`.

    Parameters
    ----------
    monthly_ratio : ndarray [12, N]
        P/PET of each month (any layout).
    annual_ratio : ndarray [N]
        P/PET of the year.
    memory_weight : ndarray [J]
        ``exp(-z_j / z_w)``, the share of the month's ratio at layer j.
    wet_ratio, exponent, offset, scale, low : float
        ``r_wet``, ``b``, ``log(ψmin/ψ_fc)``, ``log(ψmin/ψmax)`` and the floor of W.
    wetland : ndarray [N] bool
        Sites whose W is ``wetland_value`` in every month and layer.
    """
    mr = np.ascontiguousarray(monthly_ratio, dtype=np.float64)
    w = np.empty((mr.shape[0], np.size(memory_weight), mr.shape[1]))
    _moisture_ratio(mr, np.ascontiguousarray(annual_ratio, dtype=np.float64),
                    np.ascontiguousarray(memory_weight, dtype=np.float64), float(wet_ratio), 1e-12, w)
    np.log(w, out=w)  # NumPy's vectorised log (see the module docstring)
    _water_from_log_ratio(w, float(exponent), float(offset), float(scale), float(low),
                          np.ascontiguousarray(wetland, dtype=np.bool_), float(wetland_value))
    return w


def warm_up() -> None:
    """Load (or compile, once per machine) these kernels now, for a process that forks workers."""
    from socmap.clm5.grid import NODE_M  # read-only: numba types it apart from a writable array

    t = np.full((12, 20, 4), 280.0)
    t[6:, 3:] = 270.0
    thaw_depth(t, NODE_M, 273.15, 10.0)
    water_scalar(np.ones((12, 4)), np.ones(4), np.ones(20), 1.0, 1.0, 0.0, 1.0, 0.0, np.zeros(4, bool), 1.0)
    wave_response(np.ones((12, 12, 20)), np.ones((4, 12)), np.ones(4))
