"""``Augmentation``: which training-time augmentations a pipeline applies (plain data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

# Cutout hole side per dataset (DeVries & Taylor 2017; REFERENCE section 4).
CUTOUT_LENGTH: Mapping[str, int] = {"cifar10": 16, "cifar100": 8, "svhn_cropped": 20}


@dataclass(frozen=True)
class Augmentation:
    """Augmentation settings; everything is off by default.

    - ``flip``: random horizontal flip (probability 1/2 per image).
    - ``crop_padding``: pad by this many zero pixels per side, then crop back to
      the original size at a uniform random offset (the paper: 2; 0 = off).
    - ``cutout``: side length in pixels of one square hole set to 0 (the dataset
      mean, since it applies after normalisation), centre uniform over the image,
      clipped at the edges (16 CIFAR-10, 8 CIFAR-100, 20 SVHN; 0 = off).
    - ``cutmix_prob``: probability per batch of CutMix (0.5 in the paper; 0 = off);
      ``cutmix_alpha``: lambda ~ Beta(alpha, alpha).
    """

    flip: bool = False
    crop_padding: int = 0
    cutout: int = 0
    cutmix_prob: float = 0.0
    cutmix_alpha: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.flip, bool):
            raise ValueError(f"augmentation flip must be true or false, got {self.flip!r}")
        for key in ("crop_padding", "cutout"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"augmentation {key} must be an integer >= 0, got {v!r}")
        if not 0.0 <= float(self.cutmix_prob) <= 1.0:
            raise ValueError(f"augmentation cutmix_prob must be in [0, 1], got {self.cutmix_prob!r}")
        if not float(self.cutmix_alpha) > 0.0:
            raise ValueError(f"augmentation cutmix_alpha must be > 0, got {self.cutmix_alpha!r}")

    @property
    def cutmix(self) -> bool:
        """Whether the pipeline yields CutMix targets ``(y_a, y_b, lam)``."""
        return self.cutmix_prob > 0

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return self.flip or self.crop_padding > 0 or self.cutout > 0 or self.cutmix

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-compatible)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Augmentation:
        """Inverse of ``to_dict``; missing keys take defaults, unknown keys are an error."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown augmentation option(s) {bad}; valid: {sorted(known)}")
        return cls(**d)
