"""The two SH bases in the library: the 3DGS colour basis and the irradiance (lighting) basis
differ exactly by the Condon-Shortley phase (-1)^m."""
import math

import torch

from headcap.avatar.gaussians.sh import sh_basis_3dgs
from headcap.reconstruct.shading import sh_basis_irradiance

M_OF_COEFF = (0, -1, 0, 1, -2, -1, 0, 1, 2)


def _unit(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return d / d.norm(dim=-1, keepdim=True)


def test_3dgs_basis_is_the_irradiance_basis_times_the_condon_shortley_phase():
    d = _unit(64, 0)
    phase = torch.tensor([(-1.0) ** m for m in M_OF_COEFF], dtype=torch.float64)
    torch.testing.assert_close(sh_basis_3dgs(d, 2), sh_basis_irradiance(d) * phase, rtol=1e-12, atol=1e-12)


def test_both_bases_are_orthonormal_on_the_sphere():
    n_theta, n_phi = 200, 400
    theta = (torch.arange(n_theta, dtype=torch.float64) + 0.5) * math.pi / n_theta
    phi = (torch.arange(n_phi, dtype=torch.float64) + 0.5) * 2 * math.pi / n_phi
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    d = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], dim=-1).reshape(-1, 3)
    weight = (th.sin() * (math.pi / n_theta) * (2 * math.pi / n_phi)).reshape(-1, 1)
    for basis in (sh_basis_3dgs(d, 3), sh_basis_irradiance(d)):
        gram = basis.T @ (basis * weight)
        torch.testing.assert_close(gram, torch.eye(basis.shape[1], dtype=torch.float64), atol=1e-3, rtol=0)
