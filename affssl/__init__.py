"""affssl: self-supervised pretraining with affine transformation estimation (Torpey & Klein, 2024)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `affssl.load_backbone` is imported on first use, so `import affssl` (and the CLI's start) skips torch.
    if name == "load_backbone":
        from affssl.eval.features import load_backbone

        return load_backbone
    raise AttributeError(f"module 'affssl' has no attribute {name!r}")


__all__ = ["__version__", "load_backbone"]  # load_backbone: see __getattr__
