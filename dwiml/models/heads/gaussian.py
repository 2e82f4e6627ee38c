"""Gaussian heads: a diagonal Gaussian over 3D vectors (parameters: mean, log standard
deviation), whose directions are the normalized vectors."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from dwiml.models.heads.distribution import LOG_2PI, Family, MixtureDistribution, SingleDistribution



def gaussian_log_prob(params: Tensor, x: Tensor) -> Tensor:
    """Log-density at ``x`` ``(..., 3)`` of the Gaussians ``params`` ``(..., 6)``: mean, log sigma."""
    means, log_sigmas = params[..., :3], params[..., 3:]
    z = (x - means) * torch.exp(-log_sigmas)
    return -(0.5 * z**2 + log_sigmas + 0.5 * LOG_2PI).sum(dim=-1)


def gaussian_mode(params: Tensor) -> Tensor:
    """The normalized means."""
    return F.normalize(params[:, :3], dim=-1)


def gaussian_draw(params: Tensor, generator: torch.Generator) -> Tensor:
    """Normalized draws of the Gaussians."""
    means, log_sigmas = params[:, :3], params[:, 3:]
    return F.normalize(means + torch.exp(log_sigmas) * torch.randn_like(means, generator=generator), dim=-1)


GAUSSIAN = Family(size=6, log_prob=gaussian_log_prob, mode=gaussian_mode, draw=gaussian_draw)


class Gaussian(SingleDistribution):
    """A diagonal Gaussian; loss = its negative log-likelihood of the unit target."""

    family = GAUSSIAN


class GaussianMixture(MixtureDistribution):
    """A mixture of ``nb_components`` diagonal Gaussians; loss = negative log-likelihood."""

    family = GAUSSIAN
