"""Data of the paper's Exp. 1: how far from the image border can a CNN read absolute location?

A natural-image patch (patch x patch pixels) is placed at the top-left (class 0) or the
bottom-right (class 1) corner of a canvas x canvas zero image, which is then surrounded by a
black border of `border` pixels on every side. Patches come from scikit-image's bundled
photographs (offline), with disjoint source photographs for train / val / test, or from a
user's folder of images (split by file, 60/20/20).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F

# Disjoint source photographs per split (scikit-image's bundled data).
SKIMAGE_SPLITS = {
    "train": ["astronaut", "coffee", "chelsea", "hubble_deep_field", "immunohistochemistry", "rocket", "retina", "grass"],
    "val": ["camera", "coins", "gravel"],
    "test": ["moon", "brick", "clock"],
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _to_tensor(img) -> torch.Tensor:
    t = torch.as_tensor(img).float()
    if t.max() > 1.0:
        t = t / 255.0
    if t.dim() == 2:
        t = t[..., None].expand(*t.shape, 3)
    return t[..., :3].permute(2, 0, 1).contiguous()  # [3, H, W]


def source_images(split: str, image_dir: Optional[str] = None) -> list:
    """The photographs a split draws its patches from, as [3, H, W] tensors in [0, 1]."""
    if split not in SKIMAGE_SPLITS:
        raise ValueError(f"split must be one of {sorted(SKIMAGE_SPLITS)}, got {split!r}")
    if image_dir is None:
        import skimage.data
        return [_to_tensor(getattr(skimage.data, name)()) for name in SKIMAGE_SPLITS[split]]
    from PIL import Image
    files = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if len(files) < 3:
        raise ValueError(f"{image_dir}: need at least 3 images (found {len(files)})")
    a, b = int(0.6 * len(files)), int(0.8 * len(files))
    part = {"train": files[:a], "val": files[a:b], "test": files[b:]}[split]
    return [_to_tensor(Image.open(os.path.join(image_dir, f)).convert("RGB").__array__()) for f in part]


def random_patches(sources: list, n: int, patch: int, generator: torch.Generator) -> torch.Tensor:
    """n random crops (25-100% of the shorter side, random position) resized to patch x patch."""
    out = torch.empty(n, 3, patch, patch)
    for i in range(n):
        img = sources[int(torch.randint(len(sources), (1,), generator=generator))]
        h, w = img.shape[1:]
        side = int(min(h, w) * (0.25 + 0.75 * torch.rand(1, generator=generator).item()))
        side = max(side, 2)
        y = int(torch.randint(h - side + 1, (1,), generator=generator))
        x = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = img[:, y:y + side, x:x + side][None]
        out[i] = F.interpolate(crop, size=(patch, patch), mode="bilinear", antialias=True, align_corners=False)[0]
    return out


def border_location_dataset(n: int, split: str, border: int, seed: int, patch: int = 56,
                            canvas: int = 120, image_dir: Optional[str] = None, sources=None):
    """(images [n, 3, canvas + 2*border, same], labels [n]); deterministic per (split, seed)."""
    if not 0 < patch <= canvas or border < 0:
        raise ValueError(f"need 0 < patch <= canvas and border >= 0, got {patch}, {canvas}, {border}")
    if split not in SKIMAGE_SPLITS:
        raise ValueError(f"split must be one of {sorted(SKIMAGE_SPLITS)}, got {split!r}")
    split_index = {"train": 0, "val": 1, "test": 2}[split]
    g = torch.Generator().manual_seed(10_000 * seed + split_index)
    sources = sources if sources is not None else source_images(split, image_dir)
    patches = random_patches(sources, n, patch, g)
    labels = torch.randint(0, 2, (n,), generator=g)
    size = canvas + 2 * border
    images = torch.zeros(n, 3, size, size)
    for i in range(n):
        off = border if labels[i] == 0 else border + canvas - patch
        images[i, :, off:off + patch, off:off + patch] = patches[i]
    return images, labels
