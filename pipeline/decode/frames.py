"""Preprocessing: decoded frames resized and cropped to the encoder's input as its image processor does it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import ConfigError, printable


@dataclass(frozen=True)
class FrameSpec:
    """How decoded frames become the encoder's input, uint8 (crop_h, crop_w, 3), as the encoder's image processor
    makes it. keep_aspect (CLIP): shortest side resized to `short`, then centre-cropped to crop_h x crop_w; not
    keep_aspect (SigLIP): resized straight to crop_h x crop_w, aspect ratio not kept, no crop (`short` unused).
    resample: "bicubic" or "bilinear", with antialiasing (torch for backend "fast", PIL for "processor", as the
    transformers image processors run it)."""

    short: int
    crop_h: int
    crop_w: int
    backend: str = "fast"
    resample: str = "bicubic"
    keep_aspect: bool = True

    @classmethod
    def from_pixels(cls, pixels: dict, backend: str = "fast") -> FrameSpec:
        """The spec of an image processor's pixel settings (its to_dict(), or a cache's preprocess_config parsed):
        size {"shortest_edge"} with a centre crop (CLIP), or size {"height", "width"} without one (SigLIP).
        ConfigError for a setting this preprocessing does not implement; KeyError when a setting is missing."""
        if not isinstance(pixels, dict) or not isinstance(pixels["size"] or {}, dict):  # a config from a file
            raise ConfigError("the image processor's settings are not a mapping with a size mapping")
        size = pixels["size"] or {}
        resample = RESAMPLE.get(pixels["resample"]) if isinstance(pixels["resample"], int) else None  # PIL's codes
        if resample is None:
            raise ConfigError(f"preprocessing implements bicubic and bilinear resampling, the image processor asks "
                              f"for {printable(repr(pixels['resample']))[:40]}")
        if not (pixels["do_resize"] and pixels["do_rescale"] and pixels["do_normalize"]):
            raise ConfigError("preprocessing implements processors that resize, rescale and normalise; this one "
                              f"has do_resize={pixels['do_resize']}, do_rescale={pixels['do_rescale']}, "
                              f"do_normalize={pixels['do_normalize']}")
        if "shortest_edge" in size and pixels.get("do_center_crop"):
            crop = pixels["crop_size"]
            return cls(*_sides(size["shortest_edge"], crop["height"], crop["width"]), backend, resample)
        if "height" in size and not pixels.get("do_center_crop"):
            height, width = _sides(size["height"], size["width"])
            return cls(min(height, width), height, width, backend, resample, False)
        raise ConfigError(f"preprocessing implements a shortest-edge resize with a centre crop (CLIP) or a resize "
                          f"to height x width without one (SigLIP); the image processor asks for size="
                          f"{printable(repr(size))[:80]} with do_center_crop="
                          f"{printable(repr(pixels.get('do_center_crop')))[:20]}")


MAX_SIDE = 2048  # pixels of an encoder input's side: the largest CLIP and SigLIP take 448-512 (a side of 100,000 asked
# for a 240 GB frame per clip)


def _sides(*sides) -> tuple[int, ...]:
    """The image processor's sizes as ints from 1 to MAX_SIDE; ConfigError for anything else (a model folder is
    untrusted: its config must not size an allocation)."""
    if not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SIDE for s in sides):
        raise ConfigError(f"the image processor asks for frames of {sides} pixels: each side must be a whole number "
                          f"from 1 to {MAX_SIDE}")
    return sides


# PIL's resampling codes as the image processors record them -> the filter's name (torch's mode, PIL's filter)
RESAMPLE = {3: "bicubic", 2: "bilinear"}


def resize_crop(rgb: np.ndarray, spec: FrameSpec) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (crop_h, crop_w, 3), or frames of one size (N, H, W, 3) -> (N, crop_h, crop_w, 3):
    shortest side to spec.short (aspect ratio kept), centre crop; or, without keep_aspect, straight to crop_h x
    crop_w.

    "fast": torch's bicubic or bilinear with antialiasing on uint8, as PIL does; matches the transformers image
    processor within two uint8 steps (tests/test_encoder.py). Frames given together are resized in one call, each
    to the same bytes as alone (tested): on small frames the call's own cost is most of the work (4 frames of 32x32:
    0.15 ms together, 1.3 ms one by one). "processor": PIL's filter, which the processor itself runs, frame by frame.
    """
    if rgb.ndim == 3:
        return resize_crop(rgb[None], spec)[0]
    h, w = rgb.shape[1:3]
    if not spec.keep_aspect:
        new_h, new_w = spec.crop_h, spec.crop_w
    else:  # transformers' get_resize_output_image_size: the long side is int(short * long / short_side)
        new_h, new_w = (spec.short, int(spec.short * w / h)) if h <= w else (int(spec.short * h / w), spec.short)
    top, left = (new_h - spec.crop_h) // 2, (new_w - spec.crop_w) // 2
    if top < 0 or left < 0:
        raise ConfigError(f"the encoder's crop {spec.crop_w}x{spec.crop_h} is larger than its resize "
                          f"({new_w}x{new_h}): its image processor config cannot be used")
    if spec.backend == "processor":
        from PIL import Image
        pil = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[spec.resample]
        out = np.stack([np.asarray(Image.fromarray(f).resize((new_w, new_h), pil)) for f in rgb])
    else:
        import torch
        import torch.nn.functional as F
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8, channels last
        x = F.interpolate(x, size=(new_h, new_w), mode=spec.resample, antialias=True, align_corners=False)
        out = x.permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(out[:, top:top + spec.crop_h, left:left + spec.crop_w])


# Decoded frames wait in a group of up to this many bytes to be resized in one call (resize_crop: the call's own
# cost is most of the work on small frames); a frame this size or larger is resized alone.
GROUP_BYTES = 8 * 2**20


@dataclass
class FrameGroup:
    """Decoded frames of one size, uint8 (H, W, 3), waiting to be resized and cropped together, and the rows of the
    clip each fills."""

    frames: list[np.ndarray] = field(default_factory=list)
    rows: list[list[int]] = field(default_factory=list)

    def add(self, rgb: np.ndarray, rows: list[int]) -> bool:
        """Add a frame; True when the group holds GROUP_BYTES or more."""
        self.frames.append(rgb)
        self.rows.append(rows)
        return sum(f.nbytes for f in self.frames) >= GROUP_BYTES

    def flush(self, out: np.ndarray | None, spec: FrameSpec | None, num_frames: int) -> np.ndarray | None:
        """Resize and crop the group by spec (resize_crop, in one call; None: as they are) into its rows of `out`,
        allocated at the first group (uint8 (num_frames, h, w, 3)); returns `out`."""
        if self.frames:
            images = np.stack(self.frames) if spec is None else resize_crop(np.stack(self.frames), spec)
            out = np.empty((num_frames, *images.shape[1:]), np.uint8) if out is None else out
            for image, rows in zip(images, self.rows):
                out[rows] = image
        self.frames, self.rows = [], []
        return out
