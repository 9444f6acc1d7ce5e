"""Benchmarks of unmix-ext: what Un-Mix costs next to the method it extends.

Run from the repository root (``make bench`` runs them all and writes
``results/bench.md``):

- ``python -m benchmarks.step_cost``: one optimizer step, variant vs base, 19 pairs;
- ``python -m benchmarks.mixing_cost``: the mixing vs a copy, and its share of a step;
- ``python -m benchmarks.pipeline``: images/s of a whole smoke run, Un-Mix on vs off;
- ``python -m benchmarks.run_all``: the three, and the markdown report;
- ``benchmarks/gpu_check.sh``: the step and mixing benchmarks at GPU sizes (bf16).

Not part of the test suite (``tests/test_bench_smoke.py`` only checks that
``gpu_check.sh --device cpu`` runs at toy sizes).
"""
