"""The GPU check runs end to end on CPU at toy sizes and prints what it promises.

The benchmarks are not part of the suite; this one smoke test keeps
``benchmarks/gpu_check.sh`` (and the step and mixing benchmarks it runs) working.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOY_SIZES = ["--device", "cpu", "--batch", "4", "--image", "8", "--repeats", "1", "--warmup", "0", "--calls", "2"]
# online encoder calls and momentum encoder calls a step, base -> Un-Mix: the mixture adds one
# online pass (its partner's outputs are a flip, not another pass), and a momentum pass only
# where the target side sees the mixture (BYOL)
ENCODER_CALLS = {
    "simclr": ("2 -> 3", "0 -> 0"),
    "byol": ("2 -> 3", "2 -> 3"),
    "mocov2": ("2 -> 3", "2 -> 2"),
    "swav": ("2 -> 3", "0 -> 0"),
}
MIXERS = ("global", "  its flip alone", "  its lerp alone", "global, lam per sample", "region",
          "region, box per sample", "draw + mix")


def test_gpu_check_on_cpu_prints_step_and_mixing_ratios():
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), *TOY_SIZES], cwd=REPO, capture_output=True,
        text=True, timeout=300, env=dict(os.environ, PYTHON=sys.executable),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for method, (online, momentum) in ENCODER_CALLS.items():
        # pair, step ratio, rounds' min-max, memory ratio, 2 times, 2 views/s, online and momentum calls
        row = re.search(rf"^{method}_unmix / {method}\s+(\d+\.\d+)\s+(\d+\.\d+)-(\d+\.\d+)"
                        r"((?:\s+\d+\.\d+){5})\s+(\d -> \d)\s+(\d -> \d)\s*$", out, re.MULTILINE)
        assert row, f"no step row for {method} in:\n{out}"
        ratio, low, high = (float(row.group(i)) for i in (1, 2, 3))
        assert 0 < low <= ratio <= high
        assert all(float(value) > 0 for value in row.group(4).split())
        assert (row.group(5), row.group(6)) == (online, momentum)
    for mixer in MIXERS:
        assert re.search(rf"^{re.escape(mixer)}.*\s\d+\.\d+\s+\d+\.\d+$", out, re.MULTILINE), f"no {mixer} row"
    assert re.search(r"^share of a simclr_unmix step: 0\.\d+ ", out, re.MULTILINE)
