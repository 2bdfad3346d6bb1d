"""Layer shapes of the paper's F-Conv networks, shared by the CPU and CUDA benchmarks.

A layer is (name, nd, batch, in_channels, out_channels, kernel, stride, dilation, groups, size).
F-Conv sizes follow the authors' recipe (../shared/paper-code-notes.md): every k x k conv
padded k-1, the ResNet stem max-pool 2x2 stride 2, residual branches padded to match.
"""
from fullconv.ops import full_output_size


def _stem(size, batch, name):
    L = full_output_size(size, 7, 2) // 2  # 7x7/2 conv, then the 2x2/2 max-pool
    return [(f"{name} stem 7x7/2", 2, batch, 3, 64, 7, 2, 1, 1, size)], L


def resnet18_full_layers(size=224, batch=64, name="rn18"):
    layers, L = _stem(size, batch, name)
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            s = 2 if (stage > 0 and block == 0) else 1
            tag = f"{name} l{stage + 1}.{block}"
            layers.append((f"{tag} conv1{'/2' if s == 2 else ''}", 2, batch, cin, cout, 3, s, 1, 1, L))
            if s == 2:  # downsample shortcut: pad 3, then 1x1 stride 2
                layers.append((f"{tag} down 1x1/2", 2, batch, cin, cout, 1, 2, 1, 1, L + 6))
            L = full_output_size(L, 3, s)
            layers.append((f"{tag} conv2", 2, batch, cout, cout, 3, 1, 1, 1, L))
            L = full_output_size(L, 3, 1)
            cin = cout
    return layers


def resnet50_full_layers(size=224, batch=64, name="rn50"):
    layers, L = _stem(size, batch, name)
    cin = 64
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        cout = width * 4
        for block in range(blocks):
            s = 2 if (stage > 0 and block == 0) else 1
            tag = f"{name} l{stage + 1}.{block}"
            layers.append((f"{tag} conv1 1x1", 2, batch, cin, width, 1, 1, 1, 1, L))
            layers.append((f"{tag} conv2 3x3{'/2' if s == 2 else ''}", 2, batch, width, width, 3, s, 1, 1, L))
            if block == 0:  # downsample shortcut: pad 1, then 1x1 (stride s)
                layers.append((f"{tag} down 1x1{'/2' if s == 2 else ''}", 2, batch, cin, cout, 1, s, 1, 1, L + 2))
            L = full_output_size(L, 3, s)
            layers.append((f"{tag} conv3 1x1", 2, batch, width, cout, 1, 1, 1, 1, L))
            cin = cout
    return layers


def red_green_layers(batch=200):
    layers, L = [], 32
    for i, (cin, cout, s) in enumerate(((3, 32, 1), (32, 32, 2), (32, 64, 2), (64, 64, 2))):
        layers.append((f"red-green conv{i + 1}", 2, batch, cin, cout, 3, s, 1, 1, L))
        L = full_output_size(L, 3, s)
    return layers


def unique(layers):
    """One layer per distinct problem (the name of its first occurrence)."""
    seen, out = set(), []
    for layer in layers:
        if layer[1:] not in seen:
            seen.add(layer[1:])
            out.append(layer)
    return out


def useful_macs(nd, n, cin, cout, k, s, d, g, L):
    """Multiply-adds of real products (weight x actual input element), per the definition."""
    p = d * (k - 1)
    Lout = full_output_size(L, k, s, d)
    per_dim = sum(1 for o in range(Lout) for t in range(k) if 0 <= o * s + t * d - p < L)
    return n * cout * (cin // g) * per_dim ** nd
