"""torch.compile, autocast, meta device, determinism, threads."""
import pytest
import torch
from torch import nn

import fullconv
from fullconv.reference import full_conv_reference


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = fullconv.FullConv2d(3, 8, 3)
        self.c2 = fullconv.FullConv2d(8, 8, 3, stride=2, groups=2, bias=False)
        self.c3 = fullconv.FullConv1d(8, 4, 2, dilation=2)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = x.mean(2)
        return self.c3(x).amax(-1).sum(-1)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_forward_backward(backend):
    torch._dynamo.reset()
    model = Net().double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out_c = compiled(x)
    grads_c = torch.autograd.grad(out_c.sum(), [x, *model.parameters()])
    out_e = model(x)
    grads_e = torch.autograd.grad(out_e.sum(), [x, *model.parameters()])
    torch.testing.assert_close(out_c, out_e)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b)


def test_compile_dynamic_shapes():
    torch._dynamo.reset()
    conv = fullconv.FullConv2d(2, 3, 3)
    f = torch.compile(conv, fullgraph=True, backend="aot_eager", dynamic=True)
    for size in (5, 7, 11):
        x = torch.randn(2, 2, size, size + 1)
        torch.testing.assert_close(f(x), conv(x))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_autocast_cpu_matches_nn_conv(nd):
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
    fcls = {1: fullconv.FullConv1d, 2: fullconv.FullConv2d, 3: fullconv.FullConv3d}[nd]
    ref = cls(3, 4, 3, padding=2)
    conv = fcls.from_conv(ref)
    x = torch.randn(2, 3, *(6,) * nd)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        r = ref(x)
    assert y.dtype == r.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), r.float(), rtol=2e-2, atol=2e-2)
    y.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32


def test_autocast_disabled_keeps_dtype():
    conv = fullconv.FullConv2d(3, 4, 3)
    x = torch.randn(1, 3, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert conv(x).dtype == torch.float32


def test_meta_device_module_infers_shapes():
    conv = fullconv.FullConv2d(3, 8, (3, 5), stride=2, dilation=(1, 2), device="meta")
    assert conv.weight.is_meta
    y = conv(torch.empty(4, 3, 17, 16, device="meta"))
    assert y.is_meta and y.shape == (4, 8, 10, 12)
    y3 = fullconv.FullConv3d(2, 2, 3, device="meta")(torch.empty(2, 5, 6, 7, device="meta"))
    assert y3.shape == (2, 7, 8, 9)


def test_fake_tensor_mode_shapes_match_real():
    from torch._subclasses.fake_tensor import FakeTensorMode
    x = torch.randn(2, 4, 9, 7).contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 2, 3, 2)
    real = torch.ops.fullconv.full_conv(x, w, None, [2, 1], [1, 2], 2)
    with FakeTensorMode() as mode:
        fx, fw = mode.from_tensor(x), mode.from_tensor(w)
        fake = torch.ops.fullconv.full_conv(fx, fw, None, [2, 1], [1, 2], 2)
    assert fake.shape == real.shape and fake.stride() == real.stride()


@pytest.mark.parametrize("threads", [1, 2])
def test_deterministic_and_thread_count_independent(threads, cpu_algorithm):
    old = torch.get_num_threads()
    x = torch.randn(8, 16, 20, 20, requires_grad=True)
    w = torch.randn(32, 8, 3, 3, requires_grad=True)
    try:
        runs = []
        for t in (threads, threads):
            torch.set_num_threads(t)
            y = fullconv.full_conv2d(x, w, stride=2, groups=2)
            gx, gw = torch.autograd.grad(y.square().sum(), (x, w))
            runs.append((y, gx, gw))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a, b)


def test_respects_thread_setting_results_equal_reference():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x = torch.randn(3, 6, 12, 12, dtype=torch.float64)
        w = torch.randn(6, 1, 3, 3, dtype=torch.float64)
        torch.testing.assert_close(fullconv.full_conv2d(x, w, groups=6),
                                   full_conv_reference(x, w, groups=6))
    finally:
        torch.set_num_threads(old)


def test_kernels_registered():
    import torch._C as C
    for op in ("fullconv::full_conv", "fullconv::full_conv_backward"):
        assert C._dispatch_has_kernel_for_dispatch_key(op, "CPU")
        assert C._dispatch_has_kernel_for_dispatch_key(op, "Meta")
        assert C._dispatch_has_kernel_for_dispatch_key(op, "Autograd") or \
            C._dispatch_has_kernel_for_dispatch_key(op, "AutogradCPU")
    assert C._dispatch_has_kernel_for_dispatch_key("fullconv::full_conv", "AutocastCPU")
    assert C._dispatch_has_kernel_for_dispatch_key("fullconv::full_conv", "AutocastCUDA")


def _elf_needed(path):
    """DT_NEEDED entries of a 64-bit little-endian ELF shared object (None if not one)."""
    import struct
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    needed = []
    for _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, entsize or 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab_offset + val)
                needed.append(data[strtab_offset + val:end].decode())
    return needed


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="ELF shared objects")
def test_extension_shares_torch_cpp_runtime():
    # A second (static) copy of libstdc++ inside the extension garbles or crashes every C++
    # error message that formats a number; setup.py links the one torch loaded.
    import glob
    import os
    c10 = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so*"))
    torch_needed = _elf_needed(c10[0]) if c10 else None
    if not torch_needed or not any(n.startswith("libstdc++.so") for n in torch_needed):
        pytest.skip("torch does not load a shared libstdc++")
    needed = _elf_needed(fullconv._C.__file__)
    assert needed is not None
    assert any(n.startswith("libstdc++.so") for n in needed), needed
    with pytest.raises(ValueError, match=r"groups must be positive, got 0$"):
        torch.ops.fullconv.full_conv(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3), None, [1, 1], [1, 1], 0)
