"""Real spherical harmonics (degree 0-3) for view-dependent Gaussian colour.

The basis and its sign convention are those of 3D Gaussian Splatting (Kerbl et al. 2023), so
coefficients in a standard 3DGS `.ply` (`f_dc_*`, `f_rest_*`) evaluate to the same colour here.
That convention includes the Condon-Shortley phase: `sh_basis_3dgs` is (-1)^m times the real
basis without it that reconstruct.shading.sh_basis_irradiance uses for lighting (the two
differ in the sign of the odd-m functions, e.g. -y, -x in band 1), so coefficients of one
convention are not coefficients of the other.
"""
from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
         -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_degree_from_coeffs(num_coeffs: int) -> int:
    """Degree d such that (d + 1)^2 == num_coeffs; ValueError for any other count."""
    for degree in range(4):
        if (degree + 1) ** 2 == num_coeffs:
            return degree
    raise ValueError(f"sh_coeffs: expected 1, 4, 9 or 16 coefficients per Gaussian (degree 0-3), "
                     f"got {num_coeffs}")


def sh_basis_3dgs(dirs: Tensor, degree: int) -> Tensor:
    """The 3DGS real SH basis (with the Condon-Shortley phase) at unit directions.

    dirs: (..., 3) unit vectors; degree 0-3. Returns (..., (degree+1)^2), ordered by band l,
    then m = -l..l.
    """
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2.0 * zz - xx - yy),
                SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3.0 * xx - yy),
                SH_C3[1] * xy * z,
                SH_C3[2] * y * (4.0 * zz - xx - yy),
                SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                SH_C3[4] * x * (4.0 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy),
                SH_C3[6] * x * (xx - 3.0 * yy)]
    return torch.stack(out, dim=-1)


def eval_sh(sh_coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Raw SH colour sum_k c_k Y_k(dir), without the +0.5 offset.

    sh_coeffs: (N, K, C) with K in {1, 4, 9, 16}; dirs: (N, 3), any length (normalised here).
    Returns (N, C).
    """
    degree = sh_degree_from_coeffs(sh_coeffs.shape[-2])
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis_3dgs(unit, degree)
    return (basis[..., None] * sh_coeffs).sum(dim=-2)


def sh_to_color(sh_coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Colour as 3DGS renders it: max(eval_sh + 0.5, 0). (N, K, C), (N, 3) -> (N, C)."""
    return (eval_sh(sh_coeffs, dirs) + 0.5).clamp_min(0.0)
