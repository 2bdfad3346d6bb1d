"""Data generators of the experiments: shapes, labels, split independence, determinism."""
import pytest
import torch

from fullconv.data import border_location_dataset, location_pair, make_red_green, make_red_green_splits


def test_location_pair():
    x, y = location_pair(size=32, patch=8, seed=3)
    assert x.shape == (2, 1, 32, 32) and y.tolist() == [0, 1]
    assert torch.equal(x[0, 0, :8, :8], x[1, 0, -8:, -8:])
    assert x[0, 0, 8:].abs().sum() == 0 and x[1, 0, :-8].abs().sum() == 0
    assert torch.equal(location_pair(seed=3)[0], location_pair(seed=3)[0])
    with pytest.raises(ValueError):
        location_pair(size=4, patch=8)


def test_red_green_images_follow_the_rules():
    x, y, boxes = make_red_green(400, seed=1)
    assert x.shape == (400, 3, 32, 32) and set(y.tolist()) == {0, 1}
    assert torch.all(x[:, 2] == 0) and set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.all(x[:, 0].sum((1, 2)) == 16) and torch.all(x[:, 1].sum((1, 2)) == 16)
    y1, x1, y2, x2 = boxes.unbind(1)
    assert torch.all(x1 <= 9) and torch.all(x2 >= x1 + 5) and torch.all(x2 <= 27)
    top = y == 0
    assert torch.all((y1[top] >= 3) & (y1[top] <= 10) & (y2[top] >= 3) & (y2[top] <= 10))
    assert torch.all((y1[~top] >= 19) & (y1[~top] <= 26))
    # class 0: red (channel 0) is the left block
    for i in range(20):
        red_x = x[i, 0].sum(0).nonzero().min().item()
        green_x = x[i, 1].sum(0).nonzero().min().item()
        assert (red_x < green_x) == (y[i].item() == 0)


def test_red_green_splits_independent_and_deterministic():
    s = make_red_green_splits(300, 200, 200, seed=0)
    train = {tuple(t.flatten().nonzero().flatten().tolist()) for t in s.train[0]}
    val = {tuple(t.flatten().nonzero().flatten().tolist()) for t in s.val[0]}
    similar = {tuple(t.flatten().nonzero().flatten().tolist()) for t in s.similar[0]}
    # with ~10^5 possible images, independent draws share only a few by chance
    assert len(train & val) < 10 and len(train & similar) < 10
    assert not torch.equal(s.val[0], s.train[0][:200])
    again = make_red_green_splits(300, 200, 200, seed=0)
    assert torch.equal(again.dissimilar[0], s.dissimilar[0])
    assert not torch.equal(make_red_green_splits(300, 200, 200, seed=1).train[0], s.train[0])
    # dissimilar = similar moved into the other half
    d, y = s.dissimilar
    assert torch.all(d[y == 0][:, :, :16].sum((1, 2, 3)) == 0)
    assert torch.all(d[y == 1][:, :, 16:].sum((1, 2, 3)) == 0)


def test_border_location_dataset():
    pytest.importorskip("skimage")
    x, y = border_location_dataset(12, "train", border=8, seed=0, patch=20, canvas=44)
    assert x.shape == (12, 3, 60, 60)
    assert x[:, :, :8].abs().sum() == 0 and x[:, :, :, -8:].abs().sum() == 0
    for img, label in zip(x, y):
        inside = img[:, 8:28, 8:28] if label == 0 else img[:, 32:52, 32:52]
        rest = img.abs().sum() - inside.abs().sum()
        assert inside.abs().sum() > 0 and abs(rest.item()) < 1e-3
    x2, y2 = border_location_dataset(12, "train", border=8, seed=0, patch=20, canvas=44)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xt, _ = border_location_dataset(12, "test", border=8, seed=0, patch=20, canvas=44)
    assert not torch.equal(xt, x)
    with pytest.raises(ValueError):
        border_location_dataset(2, "holdout", 0, 0)
