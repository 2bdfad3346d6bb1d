"""Instruction mix of the tiled kernels' main loops, read from their SASS (no GPU needed).

The loop of a kernel is taken as the backward branch whose body holds the most tensor-core
(HMMA) or FMA instructions, the smallest such; the counts are static (instructions in the
loop's code, each path once), so they show what a loop carries, not how often each runs.
"before" counts the instructions ahead of the loop (the tile's setup) and their call sites.

    nvcc -std=c++17 -O3 -cubin -gencode arch=compute_90,code=sm_90 --expt-relaxed-constexpr \\
         -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \\
         -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -I csrc -c csrc/cuda/implicit_gemm_f16.cu -o ig.cubin
    cuobjdump -sass ig.cubin > ig.sass      # cuobjdump: CUDA toolkit, or pip nvidia-cuda-cuobjdump
    python benchmarks/sass_loops.py ig.sass [--filter image_gemm_cl_kernel]
"""
import argparse
import collections
import re

INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
MATH = ("HMMA", "FFMA", "DFMA")


def kernels(text):
    for part in re.split(r"\n\s*Function : ", text)[1:]:
        name, body = part.split("\n", 1)
        yield name.strip(), [(int(a, 16), op, args) for a, op, args in INSTR.findall(body)]


def main_loop(ins):
    best = None
    for addr, op, args in ins:
        target = re.search(r"0x([0-9a-f]+)", args) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) <= addr:
            lo, hi = int(target.group(1), 16), addr
            body = [i for i in ins if lo <= i[0] <= hi]
            math = sum(1 for i in body if i[1].split(".")[0] in MATH)
            if math and (best is None or (math, -len(body)) > (best[0], -len(best[1]))):
                best = (math, body)
    return best


def short(name):
    name = re.sub(r"^_ZN8fullconv4cuda\d+_GLOBAL__N__\w+?_cu_\w{8}\d+", "", name)
    return name[:100]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sass", help="output of cuobjdump -sass")
    ap.add_argument("--filter", default="gemm", help="substring of the kernel names to report")
    args = ap.parse_args()
    with open(args.sass) as f:
        text = f.read()
    print(f"{'kernel':<100} {'total':>6} {'loop':>5} {'math':>5} {'CALL':>5} {'LDL/STL':>7} {'before':>6} "
          f"{'CALL':>4}  most frequent in the loop")
    for name, ins in kernels(text):
        if args.filter not in name:
            continue
        found = main_loop(ins)
        if found is None:
            continue
        math, body = found
        ops = collections.Counter(i[1].split(".")[0] for i in body)
        local = ops["LDL"] + ops["STL"]
        top = ", ".join(f"{k} {v}" for k, v in ops.most_common(6))
        # the code before the loop (a tile's setup, run once per block) and its call sites (the
        # 64-bit division routine's; static: a site behind a 32-bit fast path may never run)
        before = [i for i in ins if i[0] < body[0][0]]
        before_calls = sum(1 for i in before if i[1].startswith("CALL"))
        print(f"{short(name):<100} {len(ins):>6} {len(body):>5} {math:>5} {ops['CALL']:>5} {local:>7} "
              f"{len(before):>6} {before_calls:>4}  {top}")


if __name__ == "__main__":
    main()
