"""The base of every spec (affssl.spec, affssl.spec.backbone, affssl.spec.methods): strict and frozen.

Strict: an unknown key is an error, never ignored. Frozen: a validated spec never changes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FrozenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
