#!/usr/bin/env bash
# GPU check of what Un-Mix costs: the step and mixing benchmarks at GPU sizes.
#
# SimCLR, BYOL, MoCo v2 and SwAV, each with and without Un-Mix: ResNet-18 with the
# CIFAR stem, batch 256 of 32x32 views, bf16 autocast, channels_last. Prints, per
# pair, views/s of each and the step and memory ratios (Un-Mix / base), then the
# mixing's ratio to a copy and its share of a step. A few minutes on one GPU.
#
#   benchmarks/gpu_check.sh                                  # on a CUDA machine
#   benchmarks/gpu_check.sh --device cpu --batch 8 --repeats 1 --image 16 --calls 5   # CPU smoke check
#
# Options (defaults in brackets): --device [cuda] --batch [256] --image [32]
# --repeats [10] --warmup [2] --calls [200]. PYTHON selects the interpreter
# [.venv/bin/python when present, else python3].
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda batch=256 image=32 repeats=10 warmup=2 calls=200
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --device|--batch|--image|--repeats|--warmup|--calls)
            (($# >= 2)) || { echo "gpu_check.sh: $1 needs a value" >&2; exit 2; }
            declare "${1#--}=$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1; allowed: --device --batch --image --repeats --warmup --calls" >&2
           exit 2 ;;
    esac
done
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

sizes=(--device "$device" --batch "$batch" --image "$image" --repeats "$repeats" --warmup "$warmup"
       --amp bf16 --channels-last)
echo "== step cost, Un-Mix / base (ResNet-18 CIFAR stem, bf16 autocast, channels_last)"
"$PYTHON" -m benchmarks.step_cost "${sizes[@]}" --methods simclr,byol,mocov2,swav
echo "== mixing cost"
"$PYTHON" -m benchmarks.mixing_cost "${sizes[@]}" --calls "$calls"
