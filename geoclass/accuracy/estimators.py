"""Stratified estimators of map accuracy and class area (Olofsson et al. 2014).

Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A. (2014).
"Good practices for estimating area and assessing accuracy of land change." Remote Sensing of
Environment 148: 42-57.

The strata are the map classes. Given the sample error matrix in counts ``n_ij`` (rows: map class
= stratum ``i``, columns: reference class ``j``, both in the same class order) and the mapped area
of each stratum (weights ``W_i = A_i / A``), the estimators are:

- area proportions ``p_ij = W_i n_ij / n_i.`` (eq. 4; ``p_.j`` is the proportion of class ``j``);
- overall accuracy ``O = sum_j p_jj`` (eq. 1), ``V(O) = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1)`` (eq. 5);
- user's accuracy ``U_i = p_ii / p_i. = n_ii / n_i.`` (eq. 2), ``V(U_i) = U_i (1 - U_i) / (n_i. - 1)`` (eq. 6);
- producer's accuracy ``P_j = p_jj / p_.j`` (eq. 3) with the variance of eq. 7;
- area proportion ``p_.j`` with ``SE = sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1))``
  (eq. 10), and area ``A_j = A p_.j`` with ``SE(A_j) = A SE(p_.j)`` (eq. 11).

95% confidence intervals are ``1.96 SE`` (half-widths). Pure numpy; no warnings are raised.

Strata without sample points carry no information about their reference classes, so they are left
out of the estimation domain (the weights are renormalised over the sampled strata and ``A`` is
their area); the result says which ones and how much area they hold. A stratum with a single
sample point has no variance estimate (``n_i. - 1 = 0``): every standard error it enters is
undefined (``None``), with a note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Z95", "Estimate", "StratifiedEstimates", "stratified_estimates"]

Z95 = 1.96
"""Normal quantile of a two-sided 95% confidence interval."""


@dataclass(frozen=True)
class Estimate:
    """An estimate with its standard error and 95% confidence half-width.

    Attributes:
        estimate: The value; None when undefined (e.g. a class with no reference sample).
        se: Its standard error; None when it cannot be estimated.
        ci95: Half-width of the 95% confidence interval (``1.96 * se``); None with ``se``.
    """

    estimate: float | None
    se: float | None = None
    ci95: float | None = None

    @classmethod
    def of(cls, estimate: float | None, variance: float | None = None) -> Estimate:
        """An estimate from a value and a variance (None or non-finite: undefined)."""
        if estimate is None or not math.isfinite(estimate):
            return cls(None)
        if variance is None or not math.isfinite(variance):
            return cls(float(estimate))
        se = math.sqrt(max(variance, 0.0))
        return cls(float(estimate), se, Z95 * se)

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (e.g. an area proportion times the total area)."""
        return Estimate(
            None if self.estimate is None else self.estimate * factor,
            None if self.se is None else self.se * factor,
            None if self.ci95 is None else self.ci95 * factor,
        )

    def to_dict(self) -> dict[str, float | None]:
        """``{estimate, se, ci95}``."""
        return {"estimate": self.estimate, "se": self.se, "ci95": self.ci95}


@dataclass
class StratifiedEstimates:
    """Everything the stratified estimators give for one error matrix.

    Attributes:
        counts: ``(k, k)`` sample counts ``n_ij`` (rows map/strata, columns reference).
        weights: ``(k,)`` stratum weights ``W_i`` over the estimation domain (0 outside it).
        domain_area: Total area of the sampled strata (the units of the areas given).
        total_area: Total area of all strata.
        proportions: ``(k, k)`` estimated area proportions ``p_ij`` over the domain.
        overall_accuracy: Overall accuracy.
        users_accuracy: Per map class (row); undefined for strata without samples.
        producers_accuracy: Per reference class (column); undefined where ``p_.j`` is 0.
        area_proportion: ``p_.j`` per reference class, a proportion of the domain.
        area: ``A_domain * p_.j`` per reference class, in the units of the areas given.
        unsampled: Indices of strata with mapped area but no sample point (left out).
        single: Indices of strata with exactly one sample point (no variance).
        warnings: Sentences about strata left out or without variance (the user should act).
        notes: Sentences about estimates that are undefined on this sample.
    """

    counts: np.ndarray
    weights: np.ndarray
    domain_area: float
    total_area: float
    proportions: np.ndarray
    overall_accuracy: Estimate
    users_accuracy: list[Estimate]
    producers_accuracy: list[Estimate]
    area_proportion: list[Estimate]
    area: list[Estimate]
    unsampled: list[int] = field(default_factory=list)
    single: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _names(classes: Sequence[str] | None, k: int) -> list[str]:
    return [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]


def _check(counts: np.ndarray, areas: np.ndarray) -> None:
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"the error matrix must be square, got shape {counts.shape}")
    if areas.shape != (counts.shape[0],):
        raise ValueError(f"expected {counts.shape[0]} stratum areas, got shape {areas.shape}")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError("sample counts must be finite and >= 0")
    if (areas < 0).any() or not np.isfinite(areas).all():
        raise ValueError("stratum areas must be finite and >= 0")


def stratified_estimates(
    counts: np.ndarray | Sequence[Sequence[float]],
    stratum_areas: np.ndarray | Sequence[float],
    classes: Sequence[str] | None = None,
) -> StratifiedEstimates:
    """Olofsson et al. (2014) estimates from a sample error matrix and the mapped strata areas.

    Args:
        counts: ``(k, k)`` sample counts ``n_ij``: rows are map classes (the strata), columns
            reference classes, in the same class order.
        stratum_areas: Mapped area (or pixel count, or weight) of each map class; the areas in
            the result are in the same units.
        classes: Class names, for the notes; default the indices.

    Returns:
        The estimates (see ``StratifiedEstimates``).

    Raises:
        ValueError: Shapes that do not fit, negative values, or no stratum with both mapped area
            and a sample point.
    """
    n = np.asarray(counts, dtype=np.float64)
    areas = np.asarray(stratum_areas, dtype=np.float64)
    _check(n, areas)
    k = n.shape[0]
    names = _names(classes, k)
    warned: list[str] = []
    notes: list[str] = []
    row_n = n.sum(axis=1)
    total_area = float(areas.sum())
    in_domain = (areas > 0) & (row_n > 0)
    unsampled = [i for i in range(k) if areas[i] > 0 and row_n[i] == 0]
    if not in_domain.any():
        raise ValueError("no stratum has both mapped area and a sample point")
    domain_area = float(areas[in_domain].sum())
    if unsampled:
        share = 100.0 * (total_area - domain_area) / total_area
        warned.append(
            f"{len(unsampled)} mapped class(es) have no sample point and are left out of the "
            f"estimates: {', '.join(names[i] for i in unsampled)} ({share:.3g}% of the mapped area); "
            "the estimates cover the other classes' mapped area only"
        )
    w = np.where(in_domain, areas / domain_area, 0.0)
    safe_n = np.where(in_domain, row_n, 1.0)
    q = np.where(in_domain[:, None], n / safe_n[:, None], 0.0)  # n_ij / n_i.
    p = w[:, None] * q
    single = [i for i in range(k) if in_domain[i] and row_n[i] == 1]
    if single:
        warned.append(
            f"{len(single)} class(es) have a single sample point, so no variance can be estimated "
            f"for them: {', '.join(names[i] for i in single)}; every standard error they enter is "
            "left undefined (sample at least 2 points per class)"
        )
    no_var = bool(single)
    # Per-stratum variance denominators (n_i. - 1); strata outside the domain contribute nothing.
    denom = np.where(in_domain & (row_n > 1), row_n - 1.0, 1.0)
    users_diag = np.diag(q)

    # Overall accuracy (eq. 1, 5).
    oa = float(np.trace(p))
    oa_var = None if no_var else float(np.sum(np.where(in_domain, w**2 * users_diag * (1 - users_diag) / denom, 0.0)))
    overall = Estimate.of(oa, oa_var)

    # User's accuracy per stratum (eq. 2, 6).
    users: list[Estimate] = []
    for i in range(k):
        if not in_domain[i]:
            users.append(Estimate(None))
            continue
        u = float(users_diag[i])
        users.append(Estimate.of(u, None if row_n[i] < 2 else u * (1 - u) / (row_n[i] - 1)))

    # Area proportions per reference class (eq. 9, 10) and areas (eq. 11).
    col_p = p.sum(axis=0)
    term = np.where(in_domain[:, None], (w**2)[:, None] * q * (1 - q) / denom[:, None], 0.0)
    area_prop: list[Estimate] = []
    for j in range(k):
        if j in unsampled:  # its own stratum's share of class j is unknown
            area_prop.append(Estimate(None))
            continue
        var = None if no_var else float(term[:, j].sum())
        area_prop.append(Estimate.of(float(col_p[j]), var))
    area = [e.scaled(domain_area) for e in area_prop]

    # Producer's accuracy per reference class (eq. 3, 7), with N_i. replaced by W_i (the scale
    # cancels: N_hat_.j = N p_.j and N_i. = N W_i).
    producers: list[Estimate] = []
    undefined_pa: list[str] = []
    for j in range(k):
        if col_p[j] <= 0 or j in unsampled:
            producers.append(Estimate(None))
            if col_p[j] <= 0 and j not in unsampled and areas[j] > 0:
                undefined_pa.append(names[j])
            continue
        pa = float(p[j, j] / col_p[j])
        if no_var:
            producers.append(Estimate.of(pa))
            continue
        u = float(users_diag[j])
        first = w[j] ** 2 * (1 - pa) ** 2 * u * (1 - u) / denom[j]
        others = float(np.sum(np.delete(term[:, j], j)))
        producers.append(Estimate.of(pa, (first + pa**2 * others) / col_p[j] ** 2))
    if undefined_pa:
        notes.append(
            f"no sample point has reference class {', '.join(undefined_pa)}: producer's "
            "accuracy is undefined there"
        )
    if unsampled:
        notes.append(
            f"the area and producer's accuracy of {', '.join(names[j] for j in unsampled)} are "
            "undefined: their own stratum is unsampled"
        )

    return StratifiedEstimates(
        counts=n.astype(np.int64) if np.all(n == np.round(n)) else n,
        weights=w,
        domain_area=domain_area,
        total_area=total_area,
        proportions=p,
        overall_accuracy=overall,
        users_accuracy=users,
        producers_accuracy=producers,
        area_proportion=area_prop,
        area=area,
        unsampled=unsampled,
        single=single,
        warnings=warned,
        notes=notes,
    )
