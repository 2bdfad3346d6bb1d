"""The Red-Green data set of the paper's Table 1.

32x32x3 images on a black background with two 4x4 blocks of exactly 1.0: a red one (channel 0)
and a green one (channel 1). Class 0: red left of green, both in the top half; class 1: green
left of red, both in the bottom half. Each block's top-left y is drawn independently, in
[3, 10] for the top class and [19, 26] for the bottom class; the first block's x is in
[0, 9] and the second's in [first x + 5, 27].

"Dissimilar" test images are the similar test images with both blocks moved 16 px
vertically into the other class's half, so location no longer agrees with the colour order.
Every split is drawn from its own seed (the paper's code re-seeded identically per split, so
its validation and similar test sets were copies of training images).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SIZE, BLOCK = 32, 4


def _draw(n: int, g: torch.Generator):
    labels = torch.randint(0, 2, (n,), generator=g)
    y_lo = torch.where(labels == 0, 3, 19)
    y1 = y_lo + torch.randint(0, 8, (n,), generator=g)
    y2 = y_lo + torch.randint(0, 8, (n,), generator=g)
    x1 = torch.randint(0, 10, (n,), generator=g)
    # second x uniform in [x1 + 5, 27]
    span = 27 - (x1 + 5) + 1
    x2 = x1 + 5 + (torch.rand(n, generator=g) * span).floor().long()
    return labels, y1, x1, y2, x2


def _render(labels, y1, x1, y2, x2):
    n = labels.shape[0]
    images = torch.zeros(n, 3, SIZE, SIZE)
    for i in range(n):
        # class 0: red (ch 0) left, green (ch 1) right; class 1: green left, red right
        left, right = (0, 1) if labels[i] == 0 else (1, 0)
        images[i, left, y1[i]:y1[i] + BLOCK, x1[i]:x1[i] + BLOCK] = 1.0
        images[i, right, y2[i]:y2[i] + BLOCK, x2[i]:x2[i] + BLOCK] = 1.0
    return images


def make_red_green(n: int, seed: int):
    """n images and labels, deterministic per seed. Returns (images, labels, boxes) with
    boxes [n, 4] = (y1, x1, y2, x2) of the left and right blocks."""
    g = torch.Generator().manual_seed(seed)
    labels, y1, x1, y2, x2 = _draw(n, g)
    return _render(labels, y1, x1, y2, x2), labels, torch.stack([y1, x1, y2, x2], 1)


def move_to_other_half(labels, boxes):
    """The dissimilar set: blocks moved 16 px down (class 0) or up (class 1)."""
    shift = torch.where(labels == 0, 16, -16)
    y1, x1, y2, x2 = boxes.unbind(1)
    return _render(labels, y1 + shift, x1, y2 + shift, x2)


@dataclass
class RedGreenSplits:
    train: tuple
    val: tuple
    similar: tuple
    dissimilar: tuple


def make_red_green_splits(n_train=2000, n_val=1000, n_test=1000, seed=0) -> RedGreenSplits:
    """Independent train / val / similar-test splits (distinct seeds derived from `seed`) and
    the dissimilar test set built from the similar one."""
    base = 1000 * seed
    train = make_red_green(n_train, base + 1)[:2]
    val = make_red_green(n_val, base + 2)[:2]
    test_images, test_labels, boxes = make_red_green(n_test, base + 3)
    dissimilar = (move_to_other_half(test_labels, boxes), test_labels)
    return RedGreenSplits(train, val, (test_images, test_labels), dissimilar)
