"""Direction heads (direction getters): the last layers of a model, their loss, and their
deterministic and sampled directions. Every head follows ``DirectionHead``'s interface."""
from dwiml.models.heads.base import DirectionHead
from dwiml.models.heads.classification import SmoothSphereClassification, SphereClassification
from dwiml.models.heads.fisher_von_mises import FisherVonMises, FisherVonMisesMixture
from dwiml.models.heads.gaussian import Gaussian, GaussianMixture
from dwiml.models.heads.regression import CosinePlusL2Regression, CosineRegression, L2Regression

__all__ = ["DirectionHead", "CosineRegression", "L2Regression", "CosinePlusL2Regression", "SphereClassification",
           "SmoothSphereClassification", "Gaussian", "GaussianMixture", "FisherVonMises", "FisherVonMisesMixture"]
