"""affssl: self-supervised pretraining with affine transformation estimation (Torpey & Klein, 2024)."""

__version__ = "0.1.0"
