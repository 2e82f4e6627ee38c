"""Fisher-von Mises heads: von Mises-Fisher distributions on the sphere S^2, parameters
``(..., 4)``: a mean direction (normalized here) and ``log kappa`` (the concentration)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from dwiml.models.heads.distribution import LOG_2PI, Family, MixtureDistribution, SingleDistribution

LOG_KAPPA_RANGE = (-10.0, 15.0)  # kappa in [4.5e-5, 3.3e6]: no overflow, no zero


def mean_and_kappa(params: Tensor) -> tuple[Tensor, Tensor]:
    """Unit mean directions ``(..., 3)`` and concentrations ``(...)``."""
    return F.normalize(params[..., :3], dim=-1), torch.exp(params[..., 3].clamp(*LOG_KAPPA_RANGE))


def vmf_log_prob(params: Tensor, x: Tensor) -> Tensor:
    """Log-density at unit ``x`` ``(..., 3)``: ``log(kappa / (4 pi sinh kappa)) + kappa mu.x``,

    written as ``log kappa - log 2pi - log(1 - exp(-2 kappa)) - kappa (1 - mu.x)`` so that
    it stays finite and exact for large and small kappa.
    """
    mu, kappa = mean_and_kappa(params)
    cos = (mu * x).sum(dim=-1)
    return torch.log(kappa) - LOG_2PI - torch.log(-torch.expm1(-2 * kappa)) - kappa * (1 - cos)


def vmf_mode(params: Tensor) -> Tensor:
    """The mean directions."""
    return mean_and_kappa(params)[0]


def vmf_draw(params: Tensor, generator: torch.Generator) -> Tensor:
    """Wood's (1994) construction, vectorized: ``x = w mu + sqrt(1 - w^2) v`` with ``v`` uniform
    among the unit vectors orthogonal to ``mu``, and ``w = mu.x`` drawn from its marginal
    density ``~ exp(kappa w)`` on [-1, 1]. On S^2 that marginal has an exact inverse CDF,
    ``w = 1 + log(u + (1 - u) exp(-2 kappa)) / kappa``, so Wood's rejection step is not needed.
    """
    mu, kappa = mean_and_kappa(params)
    u = torch.rand_like(kappa, generator=generator)
    w = (1 + torch.logaddexp(torch.log(u), torch.log1p(-u) - 2 * kappa) / kappa).clamp(-1.0, 1.0)
    g = torch.randn_like(mu, generator=generator)
    v = F.normalize(g - (g * mu).sum(dim=-1, keepdim=True) * mu, dim=-1)
    return w[:, None] * mu + torch.sqrt(1 - w**2)[:, None] * v


FISHER_VON_MISES = Family(size=4, log_prob=vmf_log_prob, mode=vmf_mode, draw=vmf_draw)


class FisherVonMises(SingleDistribution):
    """A von Mises-Fisher distribution; loss = its negative log-likelihood of the unit target."""

    family = FISHER_VON_MISES


class FisherVonMisesMixture(MixtureDistribution):
    """A mixture of ``nb_components`` von Mises-Fisher distributions; loss = negative log-likelihood."""

    family = FISHER_VON_MISES
