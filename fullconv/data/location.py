"""The one-layer location toy of the paper's Fig. 1 / Fig. 3."""
import torch


def location_pair(size: int = 32, patch: int = 8, seed: int = 0):
    """Two grey images with the same random patch at the top-left (class 0) and at the
    bottom-right (class 1) corner. Returns (images [2, 1, size, size], labels [2])."""
    if not 0 < patch <= size:
        raise ValueError(f"patch ({patch}) must be in 1..size ({size})")
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(patch, patch, generator=g) * 0.8 + 0.2
    images = torch.zeros(2, 1, size, size)
    images[0, 0, :patch, :patch] = p
    images[1, 0, -patch:, -patch:] = p
    return images, torch.tensor([0, 1])
