"""Direction heads: each loss against an independent computation (explicit formulas, scipy,
torch.distributions), each sampler's statistics over many draws, the end-of-streamline
output, and every head preset training through Hydra's compose API."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dipy.data import get_sphere
from hydra.errors import ConfigCompositionException
from scipy import stats
from scipy.special import log_softmax, logsumexp
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from helpers import compose_run, vmf_w_cdf
from dwiml.errors import DwimlError
from dwiml.models.heads import (CosinePlusL2Regression, CosineRegression, FisherVonMises, FisherVonMisesMixture,
                                Gaussian, GaussianMixture, L2Regression, SmoothSphereClassification,
                                SphereClassification)

IN_SIZE = 5
HEADS = {  # preset name -> class, small constructor arguments
    "cosine": (CosineRegression, {}),
    "l2": (L2Regression, {}),
    "cosine_l2": (CosinePlusL2Regression, {}),
    "sphere_classification": (SphereClassification, {"sphere": "repulsion100"}),
    "smooth_sphere_classification": (SmoothSphereClassification, {"sphere": "repulsion100"}),
    "gaussian": (Gaussian, {}),
    "gaussian_mixture": (GaussianMixture, {"nb_components": 2}),
    "fisher_von_mises": (FisherVonMises, {}),
    "fisher_von_mises_mixture": (FisherVonMisesMixture, {"nb_components": 2}),
}
REGRESSION = ["cosine", "l2", "cosine_l2"]
PROBABILISTIC = [name for name in HEADS if name not in REGRESSION]


def make(name: str, **kwargs):
    cls, args = HEADS[name]
    torch.manual_seed(0)
    return cls(IN_SIZE, **args, **kwargs)


def segments(rng: np.random.Generator, n: int) -> np.ndarray:
    """Segment vectors of random directions and lengths (targets need not be unit)."""
    return (rng.normal(size=(n, 3)) * rng.uniform(0.2, 3.0, (n, 1))).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- losses against independent computations ----

def test_regression_losses_match_explicit_formulas():
    rng = np.random.default_rng(0)
    out, target = rng.normal(size=(50, 3)).astype(np.float32), segments(rng, 50)
    u = unit(target)
    cos = 1 - np.sum(out * u, axis=1) / np.linalg.norm(out, axis=1)
    l2 = np.linalg.norm(out - u, axis=1)
    for name, expected in (("cosine", cos), ("l2", l2), ("cosine_l2", cos + l2)):
        np.testing.assert_allclose(make(name).loss(t(out), t(target)).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sphere", ["symmetric362", "symmetric724", "repulsion100", "repulsion724"])
def test_sphere_classification_is_cross_entropy_at_the_nearest_vertex(sphere):
    vertices = get_sphere(name=sphere).vertices
    rng = np.random.default_rng(1)
    logits, target = rng.normal(size=(40, len(vertices))).astype(np.float32), segments(rng, 40)
    nearest = [max(range(len(vertices)), key=lambda j: float(vertices[j] @ d)) for d in unit(target)]  # brute force
    head = SphereClassification(IN_SIZE, sphere=sphere)
    assert head.nearest_vertex(t(unit(target))).tolist() == nearest
    expected = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(40), nearest]
    np.testing.assert_allclose(head.loss(t(logits), t(target)).numpy(), expected, rtol=1e-5)


def test_smooth_sphere_targets_are_a_kernel_of_the_angle_to_the_target():
    vertices = get_sphere(name="repulsion724").vertices
    rng = np.random.default_rng(2)
    logits, target = rng.normal(size=(30, len(vertices))).astype(np.float32), segments(rng, 30)
    angles = np.arccos(np.clip(unit(target) @ vertices.T, -1, 1))
    kernel = np.exp((np.cos(angles) - 1) / math.radians(15.0) ** 2)
    soft = kernel / kernel.sum(axis=1, keepdims=True)
    expected = -(soft * log_softmax(logits.astype(np.float64), axis=1)).sum(axis=1)
    head = SmoothSphereClassification(IN_SIZE, sphere="repulsion724", smoothing_width_deg=15.0)
    np.testing.assert_allclose(head.loss(t(logits), t(target)).numpy(), expected, rtol=1e-4)


def test_narrow_smoothing_is_hard_classification():
    """With a kernel much narrower than the vertex spacing, targets on vertices are one-hot."""
    rng = np.random.default_rng(3)
    vertices = get_sphere(name="repulsion724").vertices
    logits = t(rng.normal(size=(20, len(vertices))))
    target = t(vertices[rng.integers(0, len(vertices), 20)] * 2.5)
    smooth = SmoothSphereClassification(IN_SIZE, sphere="repulsion724", smoothing_width_deg=1.0)
    torch.testing.assert_close(smooth.loss(logits, target), SphereClassification(IN_SIZE, "repulsion724").loss(
        logits, target), rtol=1e-5, atol=1e-5)


def test_gaussian_nll_matches_torch_distributions():
    rng = np.random.default_rng(4)
    params, target = t(rng.normal(size=(30, 6))), segments(rng, 30)
    gaussian = Independent(Normal(params[:, :3], params[:, 3:].exp()), 1)
    expected = -gaussian.log_prob(t(unit(target)))
    torch.testing.assert_close(make("gaussian").loss(params, t(target)), expected)


def test_gaussian_mixture_nll_matches_torch_distributions():
    rng = np.random.default_rng(5)
    k = 3
    params, target = t(rng.normal(size=(30, k + 6 * k))), segments(rng, 30)
    components = params[:, k:].reshape(30, k, 6)  # per component: mean (3), log sigma (3)
    mixture = MixtureSameFamily(Categorical(logits=params[:, :k]),
                                Independent(Normal(components[..., :3], components[..., 3:].exp()), 1))
    head = GaussianMixture(IN_SIZE, nb_components=k)
    torch.testing.assert_close(head.loss(params, t(target)), -mixture.log_prob(t(unit(target))))


KAPPAS = np.array([1e-4, 0.1, 1.0, 10.0, 300.0, 1e4, 1e5])


def vmf_rows(rng: np.random.Generator, kappas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean directions (not unit) and targets at a typical angle for each kappa."""
    mu = rng.normal(size=(len(kappas), 3))
    x = unit(unit(mu) + rng.normal(size=(len(kappas), 3)) / np.sqrt(kappas + 1)[:, None])
    return mu, x


def test_fisher_von_mises_nll_matches_its_closed_form():
    rng = np.random.default_rng(6)
    mu, x = vmf_rows(rng, KAPPAS)
    params = t(np.column_stack([mu, np.log(KAPPAS)]))
    targets = t(x * rng.uniform(0.5, 2, (len(x), 1)))
    loss = make("fisher_von_mises").loss(params, targets).double().numpy()
    m, k = unit(params[:, :3].double().numpy()), params[:, 3].double().exp().numpy()
    xs = unit(targets.double().numpy())
    scipy_nll = -np.array([stats.vonmises_fisher(m[i], k[i]).logpdf(xs[i]) for i in range(len(k))])
    small = k < 500  # log(kappa / (4 pi sinh kappa)) + kappa mu.x, written directly
    closed_nll = -(np.log(k[small] / (4 * np.pi * np.sinh(k[small]))) + k[small] * np.sum(m[small] * xs[small], 1))
    np.testing.assert_allclose(scipy_nll[small], closed_nll, rtol=1e-9)
    float32_error = 1e-5 + 1e-6 * k  # kappa times the float32 rounding of mu.x
    assert np.all(np.abs(loss - scipy_nll) <= float32_error), (loss, scipy_nll)


def test_fisher_von_mises_mixture_nll_matches_scipy():
    rng = np.random.default_rng(7)
    n, k = 12, 3
    logits = rng.normal(size=(n, k))
    kappas = rng.choice(KAPPAS[1:5], size=(n, k))
    mus, target = rng.normal(size=(n, k, 3)), segments(rng, n)
    params = t(np.concatenate([logits, np.concatenate([mus, np.log(kappas)[..., None]], 2).reshape(n, 4 * k)], 1))
    p = params.double().numpy()
    m = unit(p[:, k:].reshape(n, k, 4)[..., :3])
    kap = np.exp(p[:, k:].reshape(n, k, 4)[..., 3])
    xs = unit(target)
    log_pdf = np.array([[stats.vonmises_fisher(m[i, j], kap[i, j]).logpdf(xs[i]) for j in range(k)] for i in range(n)])
    expected = -logsumexp(log_softmax(p[:, :k], axis=1) + log_pdf, axis=1)
    head = FisherVonMisesMixture(IN_SIZE, nb_components=k)
    np.testing.assert_allclose(head.loss(params, t(target)).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_fisher_von_mises_is_stable_at_extreme_concentrations():
    rng = np.random.default_rng(8)
    mu, x = vmf_rows(rng, np.array([1.0, 1.0, 1.0, 1.0]))
    params = t(np.column_stack([mu, [-40.0, -10.0, 15.0, 60.0]])).requires_grad_()
    loss = make("fisher_von_mises").loss(params, t(x))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(params.grad).all()
    np.testing.assert_allclose(loss[0].item(), math.log(4 * math.pi), rtol=1e-4)  # uniform on the sphere


# ---- deterministic directions ----

def expected_direction(name: str, outputs: np.ndarray) -> np.ndarray:
    """What each head's deterministic direction is, computed from its parameter layout."""
    if name in REGRESSION:
        return unit(outputs)
    if "sphere" in name:
        return get_sphere(name="repulsion100").vertices[outputs.argmax(axis=1)]
    k = HEADS[name][1].get("nb_components")
    size = 6 if "gaussian" in name else 4
    if k is None:
        return unit(outputs[:, :3])
    best = outputs[:, :k].argmax(axis=1)
    return unit(outputs[:, k:].reshape(len(outputs), k, size)[np.arange(len(outputs)), best, :3])


@pytest.mark.parametrize("name", HEADS)
def test_direction_is_the_mode(name):
    head = make(name)
    outputs = head(torch.randn(64, IN_SIZE, generator=seeded(0)))
    direction = head.direction(outputs)
    np.testing.assert_allclose(direction.detach().numpy(), expected_direction(name, outputs.detach().numpy()),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(direction.norm(dim=1), torch.ones(64))


# ---- sampler statistics ----


@pytest.mark.parametrize("kappa", [0.5, 5.0, 50.0, 2000.0])
def test_fisher_von_mises_samples_follow_the_distribution(kappa):
    n = 20000
    mu = unit(np.array([1.0, -2.0, 0.5]))
    params = t(np.column_stack([np.tile(3 * mu, (n, 1)), np.full(n, math.log(kappa))]))
    x = make("fisher_von_mises").sample(params, seeded(0)).double().numpy()
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    w = x @ mu
    assert stats.kstest(w, vmf_w_cdf, args=(kappa,)).pvalue > 1e-3
    mean = x.mean(axis=0)
    mean_length = np.linalg.norm(mean)  # expected: coth(kappa) - 1/kappa
    assert abs(mean_length - (1 / np.tanh(kappa) - 1 / kappa)) < 4 * w.std() / np.sqrt(n)
    tangent_spread = np.sqrt((1 - np.mean(w**2)) / n)
    assert np.arccos(min(1.0, mean @ mu / mean_length)) < 5 * tangent_spread / mean_length
    e1 = unit(np.cross(mu, [0.0, 0.0, 1.0]))
    phi = np.arctan2(x @ np.cross(mu, e1), x @ e1)  # the angle around mu is uniform
    assert stats.kstest(phi, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3


def test_gaussian_samples_are_normalized_gaussian_draws():
    n = 20000
    mean, sigma = np.array([0.5, -0.2, 0.3]), np.array([0.1, 0.3, 0.2])
    params = t(np.tile(np.concatenate([mean, np.log(sigma)]), (n, 1)))
    x = make("gaussian").sample(params, seeded(0)).numpy()
    reference = unit(np.random.default_rng(0).normal(mean, sigma, (n, 3)))
    for axis in range(3):
        assert stats.ks_2samp(x[:, axis], reference[:, axis]).pvalue > 1e-3


def mixture_params(n: int, weights: list[float], components: np.ndarray) -> torch.Tensor:
    return t(np.tile(np.concatenate([np.log(weights), components.ravel()]), (n, 1)))


def test_gaussian_mixture_samples_each_component_by_its_weight():
    n = 20000
    means = np.eye(3)[:2]
    components = np.column_stack([means, np.full((2, 3), math.log(0.05))])
    head = GaussianMixture(IN_SIZE, nb_components=2)
    x = head.sample(mixture_params(n, [0.3, 0.7], components), seeded(0)).numpy()
    nearest = (x @ means.T).argmax(axis=1)
    assert abs(np.mean(nearest == 0) - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    for j in range(2):
        assert unit(x[nearest == j].mean(axis=0)) @ means[j] > 0.999


def test_fisher_von_mises_mixture_samples_each_component_by_its_weight():
    n = 20000
    mus, kappas = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), np.array([30.0, 300.0])
    head = FisherVonMisesMixture(IN_SIZE, nb_components=2)
    x = head.sample(mixture_params(n, [0.25, 0.75], np.column_stack([mus, np.log(kappas)])), seeded(0)).numpy()
    nearest = (x @ mus.T).argmax(axis=1)
    assert abs(np.mean(nearest == 0) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)
    for j in range(2):
        w = x[nearest == j] @ mus[j]
        assert stats.kstest(w, vmf_w_cdf, args=(kappas[j],)).pvalue > 1e-3


@pytest.mark.parametrize("name", ["sphere_classification", "smooth_sphere_classification"])
def test_sphere_samples_are_vertices_drawn_by_softmax(name):
    n = 50000
    vertices = get_sphere(name="repulsion100").vertices
    logits = np.random.default_rng(9).normal(size=len(vertices)) * 2
    x = make(name).sample(t(np.tile(logits, (n, 1))), seeded(0)).double().numpy()
    drawn = (x @ vertices.T).argmax(axis=1)
    np.testing.assert_allclose(x, vertices[drawn], atol=1e-6)
    counts = np.bincount(drawn, minlength=len(vertices))
    assert stats.chisquare(counts, n * np.exp(log_softmax(logits))).pvalue > 1e-3


@pytest.mark.parametrize("name", HEADS)
def test_sampling_is_reproducible_with_a_seed(name):
    head = make(name, eos_weight=1.0)
    outputs = head(torch.randn(200, IN_SIZE, generator=seeded(1)))
    first = head.sample(outputs, seeded(7))
    assert first.shape == (200, 3)
    torch.testing.assert_close(first.norm(dim=1), torch.ones(200))
    torch.testing.assert_close(head.sample(outputs, seeded(7)), first, rtol=0, atol=0)
    if name in REGRESSION:  # a point estimate: its sample is its direction
        torch.testing.assert_close(first, head.direction(outputs))
    else:
        assert not torch.equal(head.sample(outputs, seeded(8)), first)


# ---- the end-of-streamline output ----

@pytest.mark.parametrize("name", HEADS)
def test_eos_masks_the_direction_loss_and_adds_weighted_bce(name):
    rng = np.random.default_rng(10)
    head, plain = make(name, eos_weight=0.7), make(name)
    assert head.has_eos and not plain.has_eos and plain.eos_probability(torch.zeros(2, 3)) is None
    features = torch.randn(40, IN_SIZE, generator=seeded(2))
    outputs = head(features)
    ends = torch.as_tensor(rng.random(40) < 0.3)
    target = t(segments(rng, 40))
    target[ends] = 0.0
    loss = head.loss(outputs, target, ends)
    changed = target.clone()
    changed[ends] = t(segments(rng, int(ends.sum())))
    torch.testing.assert_close(head.loss(outputs, changed, ends), loss, rtol=0, atol=0)

    logit = outputs[:, -1].detach().double().numpy()
    p = 1 / (1 + np.exp(-logit))
    bce = -np.where(ends.numpy(), np.log(p), np.log(1 - p))
    np.testing.assert_allclose(head.eos_probability(outputs).detach().numpy(), p, rtol=1e-5)
    direction = plain.loss(outputs[:, :-1], target).detach().double().numpy()
    expected = np.where(ends.numpy(), 0.0, direction) + 0.7 * bce
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-5, atol=1e-6)

    loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_eos_targets_and_eos_output_must_go_together():
    plain, with_eos = make("cosine"), make("cosine", eos_weight=1.0)
    x = torch.randn(4, IN_SIZE)
    with pytest.raises(DwimlError, match=r"step.add_eos_target=true .*set model.head.eos_weight > 0"):
        plain.loss(plain(x), torch.randn(4, 3), torch.zeros(4, dtype=torch.bool))
    with pytest.raises(DwimlError, match=r"model.head.eos_weight > 0 .*step.add_eos_target=true"):
        with_eos.loss(with_eos(x), torch.randn(4, 3))


def test_bad_head_arguments_are_named():
    with pytest.raises(DwimlError, match="model.head.sphere.*repulsion7"):
        SphereClassification(IN_SIZE, sphere="repulsion7")
    with pytest.raises(DwimlError, match="model.head.eos_weight"):
        CosineRegression(IN_SIZE, eos_weight=-1.0)
    with pytest.raises(DwimlError, match="model.head.nb_components"):
        GaussianMixture(IN_SIZE, nb_components=0)
    with pytest.raises(DwimlError, match="model.head.smoothing_width_deg"):
        SmoothSphereClassification(IN_SIZE, smoothing_width_deg=0.0)


@pytest.mark.parametrize("name", HEADS)
def test_gradients_are_finite(name):
    head = make(name, hidden_sizes=[8])
    features = torch.randn(32, IN_SIZE, generator=seeded(3), requires_grad=True)
    loss = head.loss(head(features), t(segments(np.random.default_rng(11), 32)))
    loss.mean().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(features.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


# ---- configs ----

def test_head_options_are_checked_at_composition(cache_dir, tmp_path):
    cfg = compose_run(cache_dir, tmp_path, ["model=gru", "model/head=fisher_von_mises_mixture",
                                            "model.head.nb_components=4", "model.head.eos_weight=0.5"])
    assert cfg.model.head._target_ == "dwiml.models.heads.FisherVonMisesMixture"
    assert cfg.model.head.nb_components == 4 and cfg.model.head.eos_weight == 0.5
    with pytest.raises(ConfigCompositionException, match="nb_components"):
        compose_run(cache_dir, tmp_path, ["model/head=gaussian", "model.head.nb_components=2"])
    with pytest.raises(ConfigCompositionException, match="model.head.eos_weight"):
        compose_run(cache_dir, tmp_path, ["model.head.eos_weight=high"])


@pytest.mark.slow
def test_cli_selects_a_head():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "train.py"), "model/head=fisher_von_mises", "--cfg", "job"],
                            cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "_target_: dwiml.models.heads.FisherVonMises\n" in result.stdout
