"""fullconv vs F.convNd(padding=dilation*(k-1)): forward and every gradient over a generated
grid of configurations, in every supported dtype."""
import itertools

import pytest
import torch

import fullconv
from conftest import BLOCKED, set_cpu_algorithm
from fullconv.reference import full_conv_reference
from helpers import assert_close_scaled, check_against_reference

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]

# Non-square kernels and sizes, including size 1 and kernels larger than the input.
KERNELS = {1: [(3,), (1,), (5,), (2,)], 2: [(3, 2), (1, 1), (5, 3), (2, 4)],
           3: [(3, 2, 1), (1, 1, 1), (2, 3, 3), (3, 1, 2)]}
SIZES = {1: [(7,), (1,), (2,), (12,)], 2: [(5, 6), (1, 1), (2, 7), (6, 3)],
         3: [(3, 4, 5), (1, 1, 1), (2, 2, 3), (4, 1, 3)]}
BATCHES = [0, 1, 3, None]  # None: unbatched
LAYOUTS = ["contiguous", "noncontiguous", "channels_last"]


def make_input(nd, batch, channels, size, layout, dtype):
    shape = ((batch,) if batch is not None else ()) + (channels,) + size
    if layout == "noncontiguous":
        # every other element of a larger tensor along the last dim, channels permuted
        big = torch.randn(*shape[:-1], shape[-1] * 2, dtype=torch.float64).to(dtype)
        x = big[..., ::2]
        assert not x.is_contiguous() or x.numel() <= 1
        return x
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    if layout == "channels_last" and batch is not None and nd in (2, 3):
        fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    return x


def grid():
    cases = []
    i = 0
    for nd, stride, dilation, groups in itertools.product((1, 2, 3), (1, 2, 3), (1, 2),
                                                          ("1", "2", "depthwise")):
        kernel = KERNELS[nd][i % 4]
        size = SIZES[nd][(i // 4) % 4]
        batch = BATCHES[i % 4]
        layout = LAYOUTS[i % 3]
        i += 1
        cases.append((nd, stride, dilation, groups, kernel, size, batch, layout))
    return cases


def case_id(c):
    nd, s, d, g, k, size, b, layout = c
    return f"{nd}d-s{s}-d{d}-g{g}-k{'x'.join(map(str, k))}-in{'x'.join(map(str, size))}-b{b}-{layout}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", grid(), ids=case_id)
def test_grid(case, dtype, device):
    nd, stride, dilation, groups, kernel, size, batch, layout = case
    cin, cout = {"1": (3, 4), "2": (4, 6), "depthwise": (4, 4)}[groups]
    g = {"1": 1, "2": 2, "depthwise": 4}[groups]
    x = make_input(nd, batch, cin, size, layout, dtype)
    w = torch.randn(cout, cin // g, *kernel, dtype=torch.float64).to(dtype)
    b = torch.randn(cout, dtype=torch.float64).to(dtype) if (hash(case) % 2 == 0) else None
    check_against_reference(x, w, b, stride, dilation, g, device=device)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_and_layout(nd, batch, layout, device):
    x = make_input(nd, batch, 4, SIZES[nd][0], layout, torch.float64)
    w = torch.randn(6, 2, *KERNELS[nd][0], dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    check_against_reference(x, w, b, 2, 1, 2, device=device)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_larger_layer(dtype, device):
    # enough channels and positions for the parallel paths and several column chunks
    x = torch.randn(2, 32, 40, 40, dtype=torch.float64).to(dtype)
    w = torch.randn(48, 32, 3, 3, dtype=torch.float64).to(dtype) / 10
    b = torch.randn(48, dtype=torch.float64).to(dtype)
    check_against_reference(x, w, b, 1, 1, 1, device=device)
    check_against_reference(x, w, b, 2, 1, 1, device=device)


def test_many_column_chunks():  # the GEMM path's chunking
    # T * Cout_g * columns far above the column budget, so the chunking loop runs many times
    x = torch.randn(1, 2, 300, 300, dtype=torch.float64)
    w = torch.randn(64, 2, 5, 5, dtype=torch.float64)
    check_against_reference(x, w, None, (1, 2), 1, 1)


def test_output_layout_matches_reference(any_device):
    x = torch.randn(2, 4, 6, 6, device=any_device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(5, 4, 3, 3, device=any_device)
    y = fullconv.full_conv2d(x, w)
    r = full_conv_reference(x, w)
    assert y.is_contiguous(memory_format=torch.channels_last) == r.is_contiguous(memory_format=torch.channels_last)
    wl = w.contiguous(memory_format=torch.channels_last)
    y = fullconv.full_conv2d(x.contiguous(), wl)
    r = full_conv_reference(x.contiguous(), wl)
    assert y.is_contiguous(memory_format=torch.channels_last) == r.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nonfinite_propagation(dtype, device):
    x = torch.randn(2, 3, 6, 5, dtype=dtype)
    x[0, 1, 2, 3] = float("nan")
    x[1, 0, 0, 0] = float("inf")
    x[1, 2, 5, 4] = -float("inf")
    w = torch.randn(4, 3, 3, 2, dtype=dtype)
    y = fullconv.full_conv2d(x.to(device), w.to(device), stride=(1, 2)).cpu()
    r = full_conv_reference(x.double(), w.double(), stride=(1, 2)).to(dtype)
    assert torch.equal(y.isnan(), r.isnan()) and torch.equal(y.isinf(), r.isinf())
    torch.testing.assert_close(y, r, equal_nan=True)
    # A non-finite weight: the padded reference multiplies it with the padding, and in IEEE
    # arithmetic 0 * inf = nan. F.conv2d's float64 path does exactly that; oneDNN's float32
    # path skips the padding for some shapes, so compare with the float64 reference.
    x = torch.randn(2, 3, 6, 5, dtype=dtype)
    w[1, 2, 0, 1] = float("inf")
    w[3, 0, 2, 0] = float("nan")
    y = fullconv.full_conv2d(x.to(device), w.to(device), dilation=(2, 1)).cpu()
    r = full_conv_reference(x.double(), w.double(), dilation=(2, 1)).to(dtype)
    assert torch.equal(y.isnan(), r.isnan())
    torch.testing.assert_close(y, r, equal_nan=True)


def _unusual_layouts(n, c, h, w):
    base = torch.randn(n, c, h, w, dtype=torch.float64)
    return {
        "expanded-batch": torch.randn(1, c, h, w, dtype=torch.float64).expand(n, c, h, w),
        "channel-slice": torch.randn(n, 2 * c, h, w, dtype=torch.float64)[:, ::2],
        "nwhc": base.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1),
        "hw-transposed": base.transpose(2, 3).contiguous().transpose(2, 3),
        "channels-last-window": torch.randn(n, h + 3, w + 2, c + 5, dtype=torch.float64)[:, 1:h + 1, 2:w + 2, 3:c + 3]
                                     .permute(0, 3, 1, 2),
    }


@pytest.mark.parametrize("layout", ["expanded-batch", "channel-slice", "nwhc", "hw-transposed",
                                    "channels-last-window"])
@pytest.mark.parametrize("stride,dilation,groups", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (3, 1, 1)])
def test_unusual_input_strides(layout, stride, dilation, groups, device):
    # wide enough for whole and partial tiles of output channels, and more than the 16 input
    # channels per group below which the blocked path copies its input to channels last
    x = _unusual_layouts(2, 36, 9, 8)[layout]
    w = torch.randn(20, 36 // groups, 3, 2, dtype=torch.float64)
    b = torch.randn(20, dtype=torch.float64)
    check_against_reference(x, w, b, stride, dilation, groups, device=device)


def test_working_dtype_baseline_is_checked_before_use():
    # The bfloat16 conv3d case PyTorch's CPU convolution gets wrong (see helpers.py): fullconv
    # must still meet the fp64 reference there.
    x = torch.randn(1, 1, 1, 1, dtype=torch.float64)
    w = torch.randn(1, 1, 2, 2, 4, dtype=torch.float64)
    check_against_reference(x.bfloat16(), w.bfloat16(), None, 1, 1, 1)


@pytest.mark.skipif(not BLOCKED, reason="no blocked CPU kernels on this CPU")
@pytest.mark.parametrize("isa", ["avx512", "avx512-narrow", "avx2"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("cout,groups", [(8, 1), (12, 1), (32, 2), (24, 1), (47, 1), (64, 1), (100, 2), (130, 1)])
def test_register_tile_widths(cout, groups, dtype, isa, monkeypatch):
    # The blocked forward's and grad_weight's tiles of four vectors of output channels
    # (AVX-512, groups of at least three vectors: 48 float32 or 24 float64 channels), of two
    # (avx512-narrow: FULLCONV_CPU_BLOCKED_TILE=narrow; avx2) and of one (groups of at most one
    # vector: 8-16 float32 channels on AVX-512, 8 on AVX2), with a partial last block,
    # through the forward and both gradients (stride-1 grad_input runs the forward kernel on
    # grad_output; strided, once per residue class), channels-first and last.
    if isa.startswith("avx512") and torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("this CPU has no AVX-512")
    set_cpu_algorithm(monkeypatch, f"blocked-{isa.split('-')[0]}")
    monkeypatch.setenv("FULLCONV_CPU_BLOCKED_TILE", "narrow" if isa.endswith("narrow") else "auto")
    cin = 6 * groups
    for stride, layout in ((1, torch.contiguous_format), (2, torch.channels_last)):
        x = torch.randn(2, cin, 9, 7, dtype=torch.float64).contiguous(memory_format=layout).to(dtype)
        w = (torch.randn(cout, cin // groups, 3, 2, dtype=torch.float64) / 4).to(dtype)
        b = torch.randn(cout, dtype=torch.float64).to(dtype)
        check_against_reference(x, w, b, stride, 1, groups)
        # and as grad_input's problem: cout channels in, few out
        xt = torch.randn(2, cout, 8, 6, dtype=torch.float64).contiguous(memory_format=layout).to(dtype)
        wt = (torch.randn(cin, cout // groups, 2, 3, dtype=torch.float64) / 8).to(dtype)
        check_against_reference(xt, wt, None, stride, 1, groups)


@pytest.mark.skipif(not BLOCKED, reason="no blocked CPU kernels on this CPU")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("nd,cin,cout,groups,stride", [(2, 32, 4, 1, (2, 2)), (2, 64, 16, 4, (1, 2)), (2, 3, 4, 1, (2, 2)),
                                                       (3, 16, 6, 2, (2, 2, 2)), (1, 8, 2, 1, (3,)),
                                                       (2, 16, 16, 16, (2, 2))], ids=str)
def test_strided_forward_of_few_output_channels(nd, cin, cout, groups, stride, dtype):
    """Forwards strided along the row with fewer than 8 output channels a group (no rows
    kernel there) run on the register tiles, most lanes idle, where a group has >= 2 input
    channels (the GEMM path was 1.3-3.9x slower); depthwise ones stay on the direct kernel."""
    torch.manual_seed(cin + cout)
    size = {1: (23,), 2: (9, 11), 3: (5, 6, 7)}[nd]
    x = torch.randn(2, cin, *size, dtype=dtype)
    w = torch.randn(cout, cin // groups, *(3,) * nd, dtype=dtype) / 4
    b = torch.randn(cout, dtype=dtype)
    before = torch.ops.fullconv._cpu_kernel_calls("tiles")
    y = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd](x, w, b, stride, 1, groups)
    calls = torch.ops.fullconv._cpu_kernel_calls("tiles") - before
    assert calls == (1 if cin // groups >= 2 else 0), calls
    assert_close_scaled(y, full_conv_reference(x.double(), w.double(), b.double(), stride, 1, groups), dtype, "forward")
    check_against_reference(x, w, b, stride, 1, groups)


@pytest.mark.skipif(not BLOCKED, reason="no blocked CPU kernels on this CPU")
@pytest.mark.parametrize("positions", ["auto", "6"])
@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("cout,cin,groups,kernel,stride,dilation,width", [
    (16, 5, 1, (3, 3), 1, 1, 23),   # rows of 25: 8 + 8 + 8 + 1 positions (AVX-512 float32: one vector)
    (13, 7, 1, (2, 5), 1, 1, 9),    # a partial vector; rows of 13: 8 + 5
    (8, 12, 1, (1, 7), 1, 2, 18),   # one vector everywhere (float64 on AVX-512, float32 on AVX2); 8+8+8+6
    (20, 6, 2, (3, 4), 1, 1, 29),   # two groups of 10; rows of 32: whole tiles only
    (12, 8, 1, (3, 3), 2, 1, 40),   # strided: rows of 21 = 8 + 8 + 5
    (9, 3, 1, (5, 6), 1, 3, 4),     # rows of 19; taps in the padding at most positions: partial segments
], ids=str)
def test_wide_one_vector_tiles(cout, cin, groups, kernel, stride, dilation, width, dtype, isa, positions,
                               monkeypatch):
    """The forward's tiles of one vector of output channels span kWidePositions (8) positions
    of a row (FULLCONV_CPU_TILE_POSITIONS=6: six, as the wider tiles): tile widths from 1 to 8
    at rows' ends, every range of positions a tap's segment can cover at the row edges, NCHW
    outputs (one transpose of the tile's positions) and channels-last ones, bias, partial
    vectors, groups, stride and dilation; forward and gradients (stride-1 grad_input runs the
    same tiles on grad_output) against the reference, and the tiles seen to run."""
    if isa == "avx512" and torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("this CPU has no AVX-512")
    set_cpu_algorithm(monkeypatch, f"blocked-{isa}")
    monkeypatch.setenv("FULLCONV_CPU_TILE_POSITIONS", positions)
    torch.manual_seed(cout * width + cin)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, cin, 5, width, dtype=torch.float64).contiguous(memory_format=layout).to(dtype)
        w = (torch.randn(cout, cin // groups, *kernel, dtype=torch.float64) / 4).to(dtype)
        b = torch.randn(cout, dtype=torch.float64).to(dtype)
        before = torch.ops.fullconv._cpu_kernel_calls("tiles")
        check_against_reference(x, w, b, stride, dilation, groups)
        assert torch.ops.fullconv._cpu_kernel_calls("tiles") > before


@pytest.mark.skipif(not BLOCKED, reason="no blocked CPU kernels on this CPU")
@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("nd,cout,cin,groups", [(2, 8, 5, 1), (2, 16, 13, 1), (2, 12, 25, 1), (1, 9, 12, 1),
                                                (3, 16, 24, 2), (2, 24, 14, 2)])
def test_grad_weight_one_vector_tiles(nd, cout, cin, groups, dtype, isa, monkeypatch):
    # grad_weight on tiles of one vector of output channels x up to 12 input channels (at most
    # one vector of output channels per group: AVX-512 16 float32 / 8 float64, AVX2 8 / 4; on
    # an AVX-512 CPU groups of at most 8 float32 channels take AVX2's one-vector tiles) beside
    # the two-vector tiles, with input channels split evenly into blocks (5; 13 = 7 + 6;
    # 25 = 9 + 8 + 8; 12), strided and dilated
    if isa == "avx512" and torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("this CPU has no AVX-512")
    set_cpu_algorithm(monkeypatch, f"blocked-{isa}")
    torch.manual_seed(cout * 31 + cin)
    for stride, dilation in ((1, 1), (2, 1), (1, 2)):
        x = torch.randn(3, cin, *(7, 6, 5)[3 - nd:], dtype=torch.float64).to(dtype)
        w = (torch.randn(cout, cin // groups, *(3, 2, 3)[3 - nd:], dtype=torch.float64) / 4).to(dtype)
        b = torch.randn(cout, dtype=torch.float64).to(dtype)
        check_against_reference(x, w, b, stride, dilation, groups)


@pytest.mark.skipif(not BLOCKED, reason="no blocked CPU kernels on this CPU")
@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("rows,channels", [("2", "auto"), ("1", "auto"), ("2", "1"), ("1", "1")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("nd,size,kernel,stride,dilation", [
    (2, (7, 9), (3, 3), (1, 1), (1, 1)),     # odd number of output rows: a last single row
    (2, (7, 7), (3, 3), (1, 1), (1, 1)),     # a small map: rows of one vector
    (2, (30, 5), (3, 2), (1, 1), (1, 1)),    # many rows of one vector
    (2, (25, 20), (5, 3), (1, 1), (2, 1)),   # dilated rows, two vectors a row
    (2, (20, 40), (3, 3), (3, 1), (1, 1)),   # three vectors a row, rows three input rows apart
    (2, (4, 75), (2, 3), (1, 1), (1, 1)),    # rows of more than four vectors: two tiles a row
    (2, (6, 20), (5, 3), (2, 1), (1, 2)),    # rows two input rows apart, dilated along the row
    (2, (1, 5), (3, 2), (1, 1), (2, 1)),     # planes of one input row: edge rows read few taps
    (2, (12, 40), (3, 3), (3, 1), (2, 1)),   # rows wider than two vectors, stride > kernel reach
    (3, (3, 5, 6), (2, 3, 3), (1, 2, 1), (1, 1, 2)),
    (1, (19,), (4,), (1,), (3,)),
])
def test_depthwise_rows(nd, size, kernel, stride, dilation, dtype, rows, channels, isa, monkeypatch):
    # the depthwise kernel two output rows per call (FULLCONV_CPU_DEPTHWISE_ROWS=2, the default)
    # or one, the planes of blocks of output channels together (FULLCONV_CPU_DEPTHWISE_CHANNELS
    # =auto, the default: blocks of 6 on AVX-512, 4 on AVX2, in calls of at most 12 / 8 sums)
    # or one at a time; both builds; 7 channels (a partial last block) with one or two output
    # channels each (a block across groups); forward and gradients (stride-1 grad_input runs it
    # on grad_output)
    if isa == "avx512" and torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("this CPU has no AVX-512")
    set_cpu_algorithm(monkeypatch, f"blocked-{isa}")
    monkeypatch.setenv("FULLCONV_CPU_DEPTHWISE_ROWS", rows)
    monkeypatch.setenv("FULLCONV_CPU_DEPTHWISE_CHANNELS", channels)
    torch.manual_seed(sum(size))
    calls_before = torch.ops.fullconv._cpu_kernel_calls("depthwise")
    for cout_per_group in (1, 2):
        x = torch.randn(2, 7, *size, dtype=torch.float64).to(dtype)
        w = torch.randn(7 * cout_per_group, 1, *kernel, dtype=torch.float64).to(dtype)
        b = torch.randn(7 * cout_per_group, dtype=torch.float64).to(dtype)
        check_against_reference(x, w, b, list(stride), list(dilation), 7)
    assert torch.ops.fullconv._cpu_kernel_calls("depthwise") - calls_before >= 2  # the forwards at least


@pytest.mark.skipif(not BLOCKED, reason="no blocked CPU kernels on this CPU")
def test_depthwise_rows_setting_is_checked(monkeypatch):
    set_cpu_algorithm(monkeypatch, "blocked")
    x, w = torch.randn(2, 16, 6, 6), torch.randn(16, 1, 3, 3)
    gy = torch.randn(2, 16, 8, 8)
    for name, bad in (("FULLCONV_CPU_DEPTHWISE_ROWS", "4"), ("FULLCONV_CPU_DEPTHWISE_CHANNELS", "6"),
                      ("FULLCONV_CPU_DEPTHWISE_CL", "on"), ("FULLCONV_CPU_GATHER", "fast")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            if name == "FULLCONV_CPU_GATHER":  # grad_weight of a dense layer: copies into channel blocks
                torch.ops.fullconv.full_conv_backward(gy, x, torch.randn(16, 16, 3, 3), [1, 1], [1, 1], 1,
                                                      [False, True, False])
            else:
                torch.ops.fullconv.full_conv(x, w, None, [1, 1], [1, 1], 16)
        monkeypatch.delenv(name)


@pytest.mark.skipif(not BLOCKED, reason="no blocked CPU kernels on this CPU")
@pytest.mark.parametrize("algorithm", ["auto", "blocked"])
@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("setting", ["auto", "fixed", "off"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("channels", [3, 8, 13, 16, 23, 29, 40, 48, 70])
def test_depthwise_channels_last(channels, dtype, setting, isa, algorithm, monkeypatch):
    # channels-last inputs of depthwise layers (one output channel per input channel) read in
    # place with vectors across channels (FULLCONV_CPU_DEPTHWISE_CL=auto) or copied to NCHW for
    # the row kernel (off): channel counts of whole two-vector chunks, a partial chunk of more
    # or fewer than one vector, exactly one vector more (AVX-512 float32: 32-lane chunks; AVX2
    # float64: 8; a partial chunk of more than one vector: 13, 29); strides along the row too
    # (auto: the same kernel; off: the direct one, or the tiles where the blocked path is
    # forced); a channels-last grad_output, so grad_input runs the same kernel (strided: on
    # each residue class, writing every s-th position), also into an NCHW grad_input (an NCHW
    # input with a channels-last grad_output: the kernel's strided store); the operator's own
    # choice (auto) and the blocked path forced, on both builds; a row's last tile compiled for
    # its own width (auto: every width up to P) or for the full width (fixed)
    if isa == "avx512" and torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("this CPU has no AVX-512")
    set_cpu_algorithm(monkeypatch, f"{algorithm}-{isa}")
    monkeypatch.setenv("FULLCONV_CPU_DEPTHWISE_CL", setting)
    torch.manual_seed(channels)
    cases = [((2, 9, 13), (3, 3), (1, 1), (1, 1)), ((1, 5, 30), (5, 3), (2, 1), (1, 2)),
             ((2, 4, 3), (3, 5), (1, 1), (2, 1)), ((1, 3, 6, 7), (2, 3, 3), (1, 2, 1), (1, 1, 1)),
             ((2, 9, 13), (3, 3), (1, 2), (1, 1)), ((1, 4, 3, 11), (3, 3, 3), (2, 1, 3), (1, 1, 2)),
             ((1, 3, 40), (3, 5), (1, 1), (1, 1)), ((1, 2, 50), (2, 3), (1, 3), (1, 2))]
    for size, kernel, stride, dilation in cases:
        n, *spatial = size
        memory_format = torch.channels_last if len(spatial) == 2 else torch.channels_last_3d
        x = torch.randn(n, channels, *spatial, dtype=torch.float64).contiguous(memory_format=memory_format)
        w = torch.randn(channels, 1, *kernel, dtype=torch.float64)
        b = torch.randn(channels, dtype=torch.float64)
        leaves = [t.to(dtype).requires_grad_() for t in (x, w, b)]
        assert leaves[0].is_contiguous(memory_format=memory_format)
        calls_before = torch.ops.fullconv._cpu_kernel_calls("depthwise_cl")
        conv = fullconv.full_conv2d if len(spatial) == 2 else fullconv.full_conv3d
        y = conv(*leaves, stride, dilation, channels)
        refs = [t.clone().requires_grad_() for t in (x, w, b)]
        y_ref = full_conv_reference(*refs, list(stride), list(dilation), channels)
        assert y.is_contiguous(memory_format=memory_format)
        assert_close_scaled(y, y_ref, dtype, "forward vs fp64 reference")
        gy = torch.randn(y_ref.shape, dtype=torch.float64).contiguous(memory_format=memory_format)
        got = torch.autograd.grad(y, leaves, gy.to(dtype))
        want = torch.autograd.grad(y_ref, refs, gy)
        for name, g, r in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
            assert_close_scaled(g, r, dtype, f"{name} vs fp64 reference")
        # the kernel ran (forward and grad_input) where it should, and not where it should not
        calls = torch.ops.fullconv._cpu_kernel_calls("depthwise_cl") - calls_before
        assert calls >= 2 if setting != "off" else calls == 0, calls
        # an NCHW input, a channels-last grad_output: grad_input on the kernel, written NCHW
        x_nchw = x.contiguous().to(dtype).requires_grad_()
        y = conv(x_nchw, leaves[1], None, stride, dilation, channels)
        calls_before = torch.ops.fullconv._cpu_kernel_calls("depthwise_cl")
        (gx,) = torch.autograd.grad(y, [x_nchw], gy.to(dtype))
        assert gx.is_contiguous()
        assert_close_scaled(gx, want[0], dtype, "grad_input (NCHW) vs fp64 reference")
        calls = torch.ops.fullconv._cpu_kernel_calls("depthwise_cl") - calls_before
        assert calls >= 1 if setting != "off" else calls == 0, calls


@pytest.mark.skipif(not BLOCKED, reason="no blocked CPU kernels on this CPU")
@pytest.mark.parametrize("gather", ["auto", "aten"])
@pytest.mark.parametrize("layout", ["contiguous", "channel_sliced", "batch_sliced"])
@pytest.mark.parametrize("nd,cin,cout,groups,size", [(2, 3, 32, 1, (11, 13)), (2, 13, 24, 1, (9, 7)),
                                                     (2, 40, 40, 2, (5, 6)), (3, 8, 16, 1, (3, 5, 7)),
                                                     (1, 20, 16, 4, (37,)), (2, 16, 16, 1, (1, 9))])
def test_channel_gather_copies(nd, cin, cout, groups, size, layout, gather, monkeypatch):
    # float32 NCHW-like operands copied into channel blocks (grad_weight's x and grad_output)
    # and channels-last (the forward's and grad_input's copies, forced) by register transposes:
    # spatial sizes that are not multiples of 8 (tails), blocks that are not (3, 13, 5 input
    # channels a block), partial blocks (zero rows), channel and sample strides of views
    set_cpu_algorithm(monkeypatch, "blocked-copy")
    monkeypatch.setenv("FULLCONV_CPU_GATHER", gather)
    torch.manual_seed(cin * 7 + cout)
    n = max(3, torch.get_num_threads())  # the channels-last copies gather with a sample a thread
    if layout == "channel_sliced":
        x = torch.randn(n, 2 * cin, *size)[:, ::2]
    elif layout == "batch_sliced":
        x = torch.randn(2 * n, cin, *size)[::2]
    else:
        x = torch.randn(n, cin, *size)
    assert x.is_contiguous() == (layout == "contiguous")
    w = torch.randn(cout, cin // groups, *(3,) * nd) / 4
    b = torch.randn(cout)
    calls_before = torch.ops.fullconv._cpu_kernel_calls("gather")
    for stride in (1, 2):
        check_against_reference(x, w, b, stride, 1, groups)
    # grad_weight's tiles (>= 8 output channels a group) copy both operands into blocks
    calls = torch.ops.fullconv._cpu_kernel_calls("gather") - calls_before
    if gather == "aten":
        assert calls == 0, calls
    elif cout // groups >= 8:
        assert calls >= 4, calls


@pytest.mark.skipif(not BLOCKED, reason="the blocked kernels need AVX2 + FMA")
@pytest.mark.parametrize("setting", ["auto", "off"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("nd,cin,cout,groups,kernel,dilation", [
    (2, 16, 32, 2, 3, 1),    # 8 -> 16 channels a group
    (2, 24, 24, 8, 3, 1),    # 3 -> 3: the rows kernel (no copy of this kind); strided: the tiles
    (2, 30, 40, 5, (2, 5), 1),  # 6 -> 8
    (1, 12, 32, 4, 7, 1),
    (3, 32, 32, 2, 3, 1),    # 16 -> 16 in 3-D (the 3-D copy rule)
    (2, 16, 32, 2, 3, 2),    # dilation: no run to merge, no copy of this kind
], ids=str)
def test_group_blocked_copies(nd, cin, cout, groups, kernel, dilation, dtype, setting, monkeypatch):
    """Grouped layers whose input the tiles read through a copy: each group's channels by
    themselves ([G][N][S][Cg], FULLCONV_CPU_GROUPED=auto) so a kernel row's taps are one run,
    or channels-last (off); channels-last outputs with the tiles' tasks groups-inner (auto) or
    group-major (off); NCHW and channels-last inputs, strides 1 and 2, forward and gradients
    (grad_input's problem copies grad_output the same way) against the reference, and the copy
    seen to be made where it applies."""
    monkeypatch.setenv("FULLCONV_CPU_GROUPED", setting)
    torch.manual_seed(cin + cout + groups)
    size = {1: (29,), 2: (9, 11), 3: (5, 6, 7)}[nd]
    kernel = kernel if isinstance(kernel, tuple) else (kernel,) * nd
    for layout in ("contiguous", "channels_last"):
        if layout == "channels_last" and nd == 1:
            continue
        x = torch.randn(2, cin, *size, dtype=dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=channels_last_format(x))
        w = torch.randn(cout, cin // groups, *kernel, dtype=dtype) / 4
        b = torch.randn(cout, dtype=dtype)
        for stride in (1, 2):
            # the forward's tiles: >= 8 output channels a group, or strided with >= 2 inputs
            tiles = cout // groups >= 8 or (stride > 1 and cin // groups >= 2)
            applies = setting == "auto" and dilation == 1 and cin // groups > 1 and tiles
            before = torch.ops.fullconv._cpu_kernel_calls("group_blocked")
            check_against_reference(x, w, b, stride, dilation, groups)
            calls = torch.ops.fullconv._cpu_kernel_calls("group_blocked") - before
            assert calls >= 1 if applies else calls == 0, (calls, stride, layout)


def channels_last_format(t):
    return torch.channels_last if t.dim() == 4 else torch.channels_last_3d


@pytest.mark.parametrize("gather", ["auto", "aten"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 37, 9, 11), (1, 8, 8, 8), (2, 16, 1, 64), (2, 33, 4, 5, 6),
                                   (1, 100, 3, 70), (2, 1, 6, 6), (1, 70, 1, 1), (1, 3, 40, 53)], ids=str)
def test_layout_copies(shape, dtype, gather, monkeypatch):
    """to_layout, the CPU's changes between NCHW and channels-last (register transposes of
    8 x 8 float32, 4 x 4 float64 tiles; element by element at row and column tails): every
    element in place, bit for bit (infinities and NaN too), both directions (rows and columns in
    chunks: 3 channels x 2120 positions is one chunk of rows, three of columns), with a dtype change
    before or after, and ATen's copy where nothing changes (one channel, one position) or the
    source is in neither layout."""
    monkeypatch.setenv("FULLCONV_CPU_GATHER", gather)
    torch.manual_seed(sum(shape))
    x = torch.randn(shape).to(dtype)
    x.view(-1)[:: max(1, x.numel() // 5)] = float("nan")
    x.view(-1)[1:: max(1, x.numel() // 3)] = float("-inf")
    cl = channels_last_format(x)
    sliced = torch.randn(shape[0], 2 * shape[1], *shape[2:]).to(dtype)[:, ::2]
    for src in (x, x.contiguous(memory_format=cl), sliced):
        for out_dtype in (dtype, torch.float32, torch.float64):
            for to_cl in (False, True):
                fmt = cl if to_cl else torch.contiguous_format
                before = torch.ops.fullconv._cpu_kernel_calls("transpose")
                y = torch.ops.fullconv._to_layout(src, out_dtype, to_cl)
                calls = torch.ops.fullconv._cpu_kernel_calls("transpose") - before
                want = src.to(out_dtype).contiguous(memory_format=fmt)
                assert y.dtype == out_dtype and y.shape == want.shape and y.stride() == want.stride()
                torch.testing.assert_close(y, want, rtol=0, atol=0, equal_nan=True)
                flips = (not src.is_contiguous(memory_format=fmt) and
                         src.is_contiguous(memory_format=torch.contiguous_format if to_cl else cl))
                vector = {src.dtype, out_dtype} & {torch.float32, torch.float64}  # bfloat16 alone: ATen's
                assert calls == (1 if gather == "auto" and flips and vector else 0), (calls, flips)


@pytest.mark.skipif(not BLOCKED, reason="the blocked kernels need AVX2 + FMA")
@pytest.mark.parametrize("gather", ["auto", "aten"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("nd,cin,cout,groups,kernel,stride", [
    (2, 32, 8, 4, 3, 1),     # the rows kernel (2 output channels a group): an NCHW copy of the input
    (2, 12, 6, 1, 3, 2),     # few channels, strided: the GEMM path's NCHW columns, output back to channels-last
    (3, 16, 24, 1, 1, 1),    # one tap: ATen's convolution, its output to channels-last
    (3, 16, 6, 2, 2, 1),     # 3-D rows kernel (3 output channels a group)
], ids=str)
def test_channels_last_through_layout_copies(nd, cin, cout, groups, kernel, stride, dtype, gather, monkeypatch):
    """Channels-last inputs of the paths that compute in NCHW: the forward and every gradient
    against the reference, outputs and grad_input in the input's layout, and the transposes
    (not ATen's copies) used unless FULLCONV_CPU_GATHER=aten."""
    monkeypatch.setenv("FULLCONV_CPU_GATHER", gather)
    torch.manual_seed(cin + cout)
    size = (7, 10) if nd == 2 else (4, 5, 6)
    x = torch.randn(3, cin, *size, dtype=dtype)
    x = x.contiguous(memory_format=channels_last_format(x))
    w = torch.randn(cout, cin // groups, *(kernel,) * nd, dtype=dtype) / 4
    b = torch.randn(cout, dtype=dtype)
    before = torch.ops.fullconv._cpu_kernel_calls("transpose")
    check_against_reference(x, w, b, stride, 1, groups)
    calls = torch.ops.fullconv._cpu_kernel_calls("transpose") - before
    copies = gather == "auto" and not (kernel == 1 and dtype == torch.float32)  # (oneDNN: channels-last itself)
    assert calls >= 1 if copies else calls == 0, calls
    xg = x.detach().requires_grad_()
    y = {2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd](xg, w, b, stride, 1, groups)
    assert y.is_contiguous(memory_format=channels_last_format(y)), y.stride()
    (gx,) = torch.autograd.grad(y, xg, torch.randn_like(y))
    assert gx.stride() == x.stride()


WEIGHT_LAYOUTS = ["contiguous", "transposed", "sliced", "channels_last"]


def make_weight(cout, cin_g, kernel, layout, dtype):
    if layout == "transposed":  # (Cin', Cout) storage: output channels the closer dim
        return torch.randn(cin_g, cout, *kernel, dtype=dtype).transpose(0, 1)
    if layout == "sliced":  # taps and channels apart: every other tap of a wider kernel
        return torch.randn(cout, cin_g, *kernel[:-1], 2 * kernel[-1], dtype=dtype)[..., ::2]
    w = torch.randn(cout, cin_g, *kernel, dtype=dtype)
    return w.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else w


@pytest.mark.skipif(not BLOCKED, reason="the blocked kernels need AVX2 + FMA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("wlayout", WEIGHT_LAYOUTS)
@pytest.mark.parametrize("stride", [(1, 1), (2, 1)], ids=lambda v: f"s{v[0]}")
@pytest.mark.parametrize("cout,cin,groups,kernel", [(37, 40, 1, (3, 3)), (70, 9, 1, (2, 3)), (24, 1, 1, (3, 3)),
                                                    (1, 37, 1, (3, 3)), (64, 16, 2, (1, 1)), (8, 72, 1, (5, 5))],
                         ids=lambda v: str(v))
def test_weight_layouts_through_the_blocked_packing(cout, cin, groups, kernel, stride, wlayout, dtype, monkeypatch):
    """The blocked kernels pack a weight per call, in runs of the tile's block of output
    channels: the forward's (a contiguous copy of the weight) through 8 x 8 register transposes
    of each output channel's run of (input channel, tap) pairs; grad_input's, the transposed
    view, flipped at stride 1, through a run of taps per channel pair, through a buffer where one
    of the group's channel counts is 1 (stride 1), or through the transposes (stride 2, one
    output channel). Whole and partial blocks of 8 rows and columns, every weight layout the
    caller may pass, forward and all gradients against the reference."""
    set_cpu_algorithm(monkeypatch, "blocked")
    x = torch.randn(2, cin, 6, 5, dtype=dtype)
    w = make_weight(cout, cin // groups, kernel, wlayout, dtype)
    b = torch.randn(cout, dtype=dtype)
    check_against_reference(x, w, b, stride, (1, 1), groups)


@pytest.mark.skipif(not BLOCKED, reason="the blocked kernels need AVX2 + FMA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("value", [float("inf"), -float("inf"), float("nan")], ids=str)
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (36, 39, 2, 2), (3, 13, 2, 2)],
                         ids=["in-8x8-block", "tail-row", "tail-column"])
def test_nonfinite_weight_seen_by_the_blocked_packing(where, value, dtype, monkeypatch):
    """The blocked forward learns from its weight packing whether the weight is all finite and
    then skips the separate pass that adds the padding products of non-finite weights: a
    non-finite value inside an 8 x 8 register transpose, in a row past the last whole block of
    8 output channels, or in a column past the last whole block of 8 (input channel, tap)
    pairs must still give the reference's NaNs (0 * inf at the padding)."""
    set_cpu_algorithm(monkeypatch, "blocked")
    torch.manual_seed(0)
    x = torch.randn(2, 40, 5, 6, dtype=dtype)
    w = torch.randn(37, 40, 3, 3, dtype=dtype)
    w[where] = value
    y = fullconv.full_conv2d(x, w)
    r = full_conv_reference(x.double(), w.double()).to(dtype)
    assert torch.equal(y.isnan(), r.isnan()) and torch.equal(y.isinf(), r.isinf())
    torch.testing.assert_close(y, r, equal_nan=True, rtol=1e-4, atol=1e-3)
