"""Batched L2 logistic regression in dual form: B small problems, one damped Newton iteration for all.

Used by `cav` for the "logistic" CAV classifier: with w = sum_i a_i x_i over a problem's n training rows
(the representer theorem), the problem only needs its n x n Gram matrix K, whatever the feature count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEWTON_ITERATIONS = 50
NEWTON_TOLERANCE = 1e-10  # on the norm of the optimality residual (the objective is O(1))
STEP_SIZES = 2.0 ** -torch.arange(0, 21, dtype=torch.float64)  # backtracking candidates, all tried at once
ARMIJO = 1e-4


def _logistic_terms(
    gram: torch.Tensor, labels: torch.Tensor, dual: torch.Tensor, intercept: torch.Tensor, l2: float
) -> tuple[torch.Tensor, ...]:
    """Margins z = K a + b, the loss curvature, and the residuals (r_a, r_b) of the optimality conditions."""
    n = labels.shape[1]
    z = (gram @ dual[:, :, None]).squeeze(-1) + intercept[:, None]
    correct = torch.sigmoid(labels * z)
    dloss = -labels * (1 - correct)
    curvature = correct * (1 - correct)
    return z, curvature, dloss / n + l2 * dual, dloss.sum(1) / n


def newton_logistic(gram: torch.Tensor, labels: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean softplus(-y z) + l2/2 a^T K a over (a, b), z = K a + b, for all B problems at once.

    The optimum satisfies r_a = dloss/dz / n + l2 a = 0 and r_b = sum(dloss/dz) / n = 0; each Newton step
    solves the (n+1) x (n+1) linearisation of these (non-singular for l2 > 0 even when K is singular)
    and is damped by a batched Armijo search.
    """
    batch, n = labels.shape
    dual = gram.new_zeros(batch, n)
    intercept = gram.new_zeros(batch)
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    for _ in range(NEWTON_ITERATIONS):
        z, curvature, r_a, r_b = _logistic_terms(gram, labels, dual, intercept, l2)
        k_r = (gram @ r_a[:, :, None]).squeeze(-1)
        if float(((r_a * k_r).sum(1) + r_b**2).sqrt().max()) < NEWTON_TOLERANCE:
            break
        weighted = curvature[:, :, None] * gram / n
        jacobian = gram.new_zeros(batch, n + 1, n + 1)
        jacobian[:, :n, :n] = weighted + l2 * eye
        jacobian[:, :n, n] = curvature / n
        jacobian[:, n, :n] = weighted.sum(1)
        jacobian[:, n, n] = curvature.sum(1) / n
        step = torch.linalg.solve(jacobian, -torch.cat([r_a, r_b[:, None]], 1))
        slope = (k_r * step[:, :n]).sum(1) + r_b * step[:, n]
        t = _armijo_step(gram, labels, dual, z, step, slope, l2)
        dual = dual + t[:, None] * step[:, :n]
        intercept = intercept + t * step[:, n]
    return dual, intercept


def _armijo_step(
    gram: torch.Tensor,
    labels: torch.Tensor,
    dual: torch.Tensor,
    z: torch.Tensor,
    step: torch.Tensor,
    slope: torch.Tensor,
    l2: float,
) -> torch.Tensor:
    """Largest step size 2^-k with sufficient decrease, per problem (0 where none: converged).

    The objective along the step is cheap in closed form (margins move linearly, the penalty is a
    quadratic in t); the full step is tried first and the ladder of halvings only where it fails.
    """
    n = labels.shape[1]
    k_step = (gram @ step[:, :n, None]).squeeze(-1)
    quadratic = torch.stack(
        [
            (dual * (gram @ dual[:, :, None]).squeeze(-1)).sum(1),
            (dual * k_step).sum(1),
            (step[:, :n] * k_step).sum(1),
        ],
        dim=1,
    )
    along = _LineObjective(labels, z, k_step + step[:, n : n + 1], quadratic, l2)
    current = along.at(torch.zeros(1, dtype=z.dtype, device=z.device))[:, 0]
    sizes = torch.ones_like(slope)
    full = along.at(torch.ones(1, dtype=z.dtype, device=z.device))[:, 0] <= current + ARMIJO * slope
    retry = (~full).nonzero().squeeze(1)
    if len(retry):
        ladder = STEP_SIZES.to(z.device)
        values = along.subset(retry).at(ladder)
        accepted = values <= current[retry, None] + ARMIJO * ladder * slope[retry, None]
        first = accepted.to(torch.int8).argmax(1)
        sizes[retry] = torch.where(accepted.any(1), ladder[first], torch.zeros_like(first, dtype=z.dtype))
    return sizes


@dataclass(frozen=True)
class _LineObjective:
    """mean softplus(-y (z + t dz)) + l2/2 (aKa + 2t aKs + t^2 sKs): the objective along a Newton step."""

    labels: torch.Tensor
    z: torch.Tensor
    dz: torch.Tensor
    quadratic: torch.Tensor  # B x 3: aKa, aKs, sKs
    l2: float

    def at(self, sizes: torch.Tensor) -> torch.Tensor:
        """Objective for every problem and step size (B x T)."""
        margins = self.labels[:, None] * (self.z[:, None] + sizes[None, :, None] * self.dz[:, None])
        loss = torch.logaddexp(torch.zeros_like(margins), -margins).mean(-1)
        a_k_a, a_k_s, s_k_s = self.quadratic.unbind(1)
        return loss + self.l2 / 2 * (a_k_a[:, None] + 2 * sizes * a_k_s[:, None] + sizes**2 * s_k_s[:, None])

    def subset(self, index: torch.Tensor) -> _LineObjective:
        return _LineObjective(
            self.labels[index], self.z[index], self.dz[index], self.quadratic[index], self.l2
        )
