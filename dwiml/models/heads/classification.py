"""Classification heads: one logit per vertex of a dipy sphere."""
from __future__ import annotations

import math

import torch
from dipy.data import DataError, get_sphere
from torch import Tensor
from torch.nn import functional as F

from dwiml.config.schema import SmoothSphereClassificationConfig
from dwiml.errors import DwimlError
from dwiml.models.heads.base import DirectionHead, draw_class
from dwiml.ranges import check_all, rules_of


def sphere_vertices(name: str) -> Tensor:
    """Unit vertices ``(V, 3)`` of dipy's sphere ``name`` (e.g. repulsion724, symmetric362)."""
    try:
        sphere = get_sphere(name=name)
    except DataError:
        raise DwimlError(f"model.head.sphere: dipy has no sphere called '{name}' "
                         "(e.g. symmetric362, symmetric724, repulsion100, repulsion724)") from None
    return torch.as_tensor(sphere.vertices, dtype=torch.float32)


class SphereClassification(DirectionHead):
    """Class = nearest sphere vertex to the target; loss = cross-entropy.

    Direction: the most probable vertex; sample: a vertex drawn from the softmax.
    """

    def __init__(self, in_size: int, sphere: str = "repulsion724", hidden_sizes: list[int] | tuple[int, ...] = (),
                 eos_weight: float = 0.0):
        vertices = sphere_vertices(sphere)
        super().__init__(in_size, len(vertices), hidden_sizes, eos_weight)
        self.register_buffer("vertices", vertices, persistent=False)  # rebuilt from the sphere name

    def nearest_vertex(self, directions: Tensor) -> Tensor:
        """Index ``(N,)`` of the vertex closest to each unit direction."""
        return (directions @ self.vertices.T).argmax(dim=-1)

    def direction_loss(self, params: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(params, self.nearest_vertex(targets), reduction="none")

    def mode(self, params: Tensor) -> Tensor:
        return self.vertices[params.argmax(dim=-1)]

    def draw(self, params: Tensor, generator: torch.Generator) -> Tensor:
        return self.vertices[draw_class(params, generator)]


class SmoothSphereClassification(SphereClassification):
    """Sphere classification against soft targets: each vertex ``v`` is weighted by
    ``exp(kappa (v . target - 1))`` (a von Mises-Fisher kernel around the target,
    ``kappa = 1 / width^2``: about a Gaussian of the angle with standard deviation
    ``smoothing_width_deg``), normalized; loss = cross-entropy with those soft targets."""

    def __init__(self, in_size: int, sphere: str = "repulsion724", smoothing_width_deg: float = 10.0,
                 hidden_sizes: list[int] | tuple[int, ...] = (), eos_weight: float = 0.0):
        check_all(dict(smoothing_width_deg=smoothing_width_deg), rules_of(SmoothSphereClassificationConfig),
                  "model.head.".__add__)
        super().__init__(in_size, sphere, hidden_sizes, eos_weight)
        self.kappa = 1.0 / math.radians(smoothing_width_deg) ** 2

    def soft_targets(self, targets: Tensor) -> Tensor:
        """``(N, V)`` target probabilities of the vertices around each unit target."""
        return torch.softmax(self.kappa * (targets @ self.vertices.T), dim=-1)

    def direction_loss(self, params: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(params, self.soft_targets(targets), reduction="none")
