"""affssl: self-supervised pretraining with affine transformation estimation (Torpey & Klein, 2024)."""

__version__ = "0.1.0"

# Public names imported on first use, so `import affssl` (and the CLI's start) skips torch.
_LAZY = {
    "AffineEstimation": "affssl.affine_block",
    "AugSelf": "affssl.objectives.augself",
    "CARE": "affssl.objectives.care",
    "RotationPrediction": "affssl.objectives.rotation",
    "AffineSpec": "affssl.spec",
    "AugSelfSpec": "affssl.spec",
    "CareSpec": "affssl.spec",
    "RotationSpec": "affssl.spec",
    "load_backbone": "affssl.eval.features",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'affssl' has no attribute {name!r}")


__all__ = [
    "CARE",
    "AffineEstimation",
    "AffineSpec",
    "AugSelf",
    "AugSelfSpec",
    "CareSpec",
    "RotationPrediction",
    "RotationSpec",
    "__version__",
    "load_backbone",
]  # see __getattr__
