"""Tests of unmix_ext.mixing: exact mixtures, the sampler's statistics, errors."""

import math

import numpy as np
import pytest
import torch

from unmix_ext.mixing import MixResult, UnMix, mix_with_reversed


def distinct_batch(n, h=4, w=4, c=1):
    """(n, c, h, w) float batch in which every pixel of every sample differs."""
    return torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)


def partner_of(x):
    """The reversed batch built by indexing, independent of Tensor.flip."""
    return x[list(range(x.shape[0] - 1, -1, -1))]


def reference_region(x, boxes):
    """Region mixture by per-sample slicing: sample i gets boxes[i] from its partner."""
    expected = x.clone()
    partner = partner_of(x)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        expected[i, :, y1:y2, x1:x2] = partner[i, :, y1:y2, x1:x2]
    return expected


# one example of each way to mix, for the properties every way must keep
VARIANTS = {
    "global": lambda n: (0.25, "global", None),
    "global per sample": lambda n: (torch.linspace(0.0, 1.0, n), "global", None),
    "region": lambda n: (0.5, "region", (1, 0, 3, 3)),
    "region per sample": lambda n: (
        0.5,
        "region",
        torch.tensor([[0, 0, 2, 2], [1, 1, 4, 3]] * (n // 2) + [[2, 0, 3, 4]] * (n % 2)),
    ),
}


# ---------------------------------------------------------------- mix_with_reversed: values


def test_global_float_lam_exact_values():
    x = distinct_batch(4)
    mixed, lam = mix_with_reversed(x, 0.25, "global")
    # dyadic weights on small integers: exact in fp32
    assert torch.equal(mixed, 0.25 * x + 0.75 * partner_of(x))
    assert mixed[0, 0, 0, 0].item() == 0.75 * 48  # pixel 0 of sample 3 is 48
    assert lam == 0.25


def test_global_per_sample_lam_exact_values():
    x = distinct_batch(3)
    lam = torch.tensor([0.25, 0.5, 1.0])
    mixed, lam_effective = mix_with_reversed(x, lam, "global")
    expected = torch.stack([0.25 * x[0] + 0.75 * x[2], x[1], x[2]])
    assert torch.equal(mixed, expected)
    assert torch.equal(lam_effective, lam)


def test_region_box_exact_values_and_pixel_share():
    x = distinct_batch(4)
    mixed, lam = mix_with_reversed(x, 0.9, "region", (1, 2, 4, 4))  # 3 wide, 2 high
    expected = x.clone()
    expected[0, 0, 2:, 1:] = torch.tensor([[57.0, 58, 59], [61, 62, 63]])  # from sample 3
    expected[3, 0, 2:, 1:] = torch.tensor([[9.0, 10, 11], [13, 14, 15]])  # from sample 0
    expected[1, 0, 2:, 1:], expected[2, 0, 2:, 1:] = x[2, 0, 2:, 1:], x[1, 0, 2:, 1:]
    assert torch.equal(mixed, expected)
    assert lam == 1 - 6 / 16  # the box decides lam, not the lam passed


def test_region_per_sample_boxes_match_slicing_and_count_clipped_pixels():
    x = distinct_batch(4)
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 4, 3], [3, 3, 9, 9], [2, 2, 2, 4]])  # clipped, empty
    mixed, lam = mix_with_reversed(x, 0.5, "region", boxes)
    clipped = [(0, 0, 2, 2), (1, 1, 4, 3), (3, 3, 4, 4), (2, 2, 2, 4)]
    assert torch.equal(mixed, reference_region(x, clipped))
    assert torch.equal(lam, torch.tensor([1 - 4 / 16, 1 - 6 / 16, 1 - 1 / 16, 1.0]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_odd_batch_middle_sample_is_its_own_partner(variant):
    x = distinct_batch(5)
    mixed, _ = mix_with_reversed(x, *VARIANTS[variant](5))
    assert torch.equal(mixed[2], x[2])
    assert not torch.equal(mixed[0], x[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_input_is_not_modified(variant):
    x = distinct_batch(4)
    before = x.clone()
    mix_with_reversed(x, *VARIANTS[variant](4))
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("variant", VARIANTS)
def test_dtype_is_kept(variant, dtype):
    mixed, _ = mix_with_reversed(distinct_batch(4).to(dtype), *VARIANTS[variant](4))
    assert mixed.dtype == dtype


@pytest.mark.parametrize("variant", VARIANTS)
def test_channels_last_is_kept(variant):
    x = distinct_batch(4, c=3).to(memory_format=torch.channels_last)
    mixed, _ = mix_with_reversed(x, *VARIANTS[variant](4))
    assert mixed.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(mixed, mix_with_reversed(x.contiguous(), *VARIANTS[variant](4))[0])


def test_per_sample_lam_in_bf16_is_the_weight_applied():
    x = torch.rand(2, 1, 4, 4).to(torch.bfloat16)
    lam = torch.tensor([0.3, 0.7001])  # not representable in bf16
    mixed, lam_effective = mix_with_reversed(x, lam, "global")
    applied = lam.to(torch.bfloat16)
    assert torch.equal(lam_effective, applied.float())
    expected = torch.lerp(x.flip(0), x, applied.view(2, 1, 1, 1))
    assert torch.equal(mixed, expected)


# ---------------------------------------------------------------- UnMix: draws and statistics


def test_region_box_is_cut_centred_uniformly_and_clipped():
    # lam = 0.75: cut ratio 0.5. Along W=6 a 3 wide span [cx - 1, cx + 2) for cx in
    # 0..5, clipped to [0, 6); along H=10 a 5 high span [cy - 2, cy + 3), cy in 0..9
    unmix = UnMix(lam=0.75, prob=0.0)
    x = distinct_batch(2, h=10, w=6)
    generator = torch.Generator().manual_seed(0)
    spans_x, spans_y = set(), set()
    for _ in range(300):
        mix = unmix(x, generator)
        x1, y1, x2, y2 = mix.box
        spans_x.add((x1, x2))
        spans_y.add((y1, y2))
        changed = (mix.images[0] != x[0]).sum().item()
        assert changed == (x2 - x1) * (y2 - y1)
        assert mix.lam == 1 - changed / 60
    assert spans_x == {(0, 2), (0, 3), (1, 4), (2, 5), (3, 6), (4, 6)}
    assert spans_y == {
        (0, 3), (0, 4), (0, 5), (1, 6), (2, 7), (3, 8), (4, 9), (5, 10), (6, 10), (7, 10)
    }


def test_region_box_size_truncates_the_cut():
    # lam = 0.5: cut ratio 0.7071, so int(7 * 0.7071) = 4 wide and int(5 * 0.7071) = 3 high
    unmix = UnMix(lam=0.5, prob=0.0)
    x = distinct_batch(2, h=5, w=7)
    generator = torch.Generator().manual_seed(11)
    boxes = torch.tensor([unmix(x, generator).box for _ in range(100)])
    assert (boxes[:, 2] - boxes[:, 0]).max() == 4
    assert (boxes[:, 3] - boxes[:, 1]).max() == 3


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_lam_follows_beta_mean_and_variance(alpha):
    unmix = UnMix(alpha=alpha, prob=1.0)
    x = distinct_batch(2, h=2, w=2)
    generator = torch.Generator().manual_seed(1)
    lams = torch.tensor([unmix(x, generator).lam for _ in range(4000)], dtype=torch.float64)
    # Beta(a, a): mean 1/2, variance 1/(4(2a + 1)); 5 standard errors of the
    # sample mean and variance leave a chance of about 1e-6 to fail by luck
    se_mean = lams.std() / math.sqrt(len(lams))
    squares = (lams - lams.mean()) ** 2
    se_var = squares.std() / math.sqrt(len(lams))
    assert abs(lams.mean() - 0.5) < 5 * se_mean
    assert abs(lams.var() - 1 / (4 * (2 * alpha + 1))) < 5 * se_var


def test_share_of_global_mode_is_prob():
    unmix = UnMix(prob=0.3)
    x = distinct_batch(2, h=2, w=2)
    generator = torch.Generator().manual_seed(2)
    modes = [unmix(x, generator).mode for _ in range(4000)]
    share = modes.count("global") / len(modes)
    # binomial standard error sqrt(p(1 - p)/n) = 0.0072; 5 of them
    assert abs(share - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 4000)


@pytest.mark.parametrize("per_sample", [False, True])
def test_region_lam_is_the_pixel_share_kept(per_sample):
    unmix = UnMix(prob=0.0, per_sample=per_sample)
    x = distinct_batch(4, h=6, w=5, c=2)
    generator = torch.Generator().manual_seed(3)
    for _ in range(50):
        mix = unmix(x, generator)
        kept = (mix.images == x).float().mean(dim=(1, 2, 3))
        expected = kept if per_sample else kept[0].item()
        assert mix.mode == "region"
        assert torch.allclose(torch.as_tensor(mix.lam), torch.as_tensor(expected), atol=1e-6)


def test_per_sample_draws_one_lam_per_sample_and_mixes_with_it():
    unmix = UnMix(prob=1.0, per_sample=True)
    x = torch.rand(6, 3, 4, 4)
    mix = unmix(x, torch.Generator().manual_seed(4))
    assert mix.lam.shape == (6,) and len(set(mix.lam.tolist())) == 6
    lam = mix.lam.view(6, 1, 1, 1)
    torch.testing.assert_close(mix.images, lam * x + (1 - lam) * partner_of(x))


@pytest.mark.parametrize("per_sample", [False, True])
def test_seeded_generator_reproduces_the_draws(per_sample):
    unmix = UnMix(per_sample=per_sample)
    x = torch.rand(4, 3, 8, 8)

    def draws(seed):
        generator = torch.Generator().manual_seed(seed)
        return [unmix(x, generator) for _ in range(20)]

    def same(a: MixResult, b: MixResult):
        def tensors(m):
            return m.images, torch.as_tensor(m.lam), torch.as_tensor(() if m.box is None else m.box)

        return a.mode == b.mode and all(torch.equal(p, q) for p, q in zip(tensors(a), tensors(b)))

    first, again, other = draws(5), draws(5), draws(6)
    assert all(same(a, b) for a, b in zip(first, again))
    assert not any(same(a, b) for a, b in zip(first, other))


def test_default_generator_is_torch_global_rng():
    unmix = UnMix()
    x = torch.rand(2, 1, 4, 4)
    with torch.random.fork_rng():  # leave the global seed as the other tests found it
        torch.manual_seed(7)
        first = unmix(x)
        torch.manual_seed(7)
        assert unmix(x).lam == first.lam


@pytest.mark.parametrize("prob, mode", [(1.0, "global"), (0.0, "region")])
def test_prob_extremes_fix_the_mode(prob, mode):
    unmix = UnMix(prob=prob)
    x = distinct_batch(2, h=2, w=2)
    generator = torch.Generator().manual_seed(8)
    assert {unmix(x, generator).mode for _ in range(300)} == {mode}


def test_fixed_lam_is_used_in_global_mode():
    unmix = UnMix(lam=0.3, prob=1.0)
    x = torch.rand(4, 3, 4, 4)
    mix = unmix(x, torch.Generator().manual_seed(9))
    assert (mix.lam, mix.mode, mix.box) == (0.3, "global", None)
    torch.testing.assert_close(mix.images, 0.3 * x + 0.7 * partner_of(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("prob", [1.0, 0.0])
def test_cuda_mixing_stays_on_device_without_host_sync(prob, per_sample):
    x = torch.rand(8, 3, 16, 16, device="cuda").to(memory_format=torch.channels_last)
    unmix = UnMix(prob=prob, per_sample=per_sample)
    torch.cuda.set_sync_debug_mode("error")
    try:
        mix = unmix(x, torch.Generator().manual_seed(10))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert mix.images.is_cuda and mix.images.is_contiguous(memory_format=torch.channels_last)
    if per_sample:
        assert mix.lam.is_cuda
    reference = unmix(x.cpu(), torch.Generator().manual_seed(10))
    torch.testing.assert_close(mix.images.cpu(), reference.images)


# ---------------------------------------------------------------- errors

BAD_CONSTRUCTION = [
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": -1.0}, "alpha"),
    ({"alpha": float("inf")}, "alpha"),
    ({"alpha": float("nan")}, "alpha"),
    ({"prob": -0.1}, "prob"),
    ({"prob": 1.5}, "prob"),
    ({"lam": -0.1}, "lam"),
    ({"lam": 1.1}, "lam"),
    ({"lam": float("nan")}, "lam"),
]


def assert_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs, name", BAD_CONSTRUCTION)
def test_bad_construction_arguments_raise(kwargs, name):
    allowed = r"> 0" if name == "alpha" else r"\[0, 1\]"
    assert_one_line_value_error(lambda: UnMix(**kwargs), rf"^{name} must be .*{allowed}")


def mix4(lam=0.5, mode="region", box=None):
    return mix_with_reversed(distinct_batch(4), lam, mode, box)


BAD_CALLS = {
    "batch of one, sampler": (
        lambda: UnMix()(torch.rand(1, 3, 4, 4)),
        r"at least 2 images .* got N=1$",
    ),
    "batch of one, mix": (
        lambda: mix_with_reversed(torch.rand(1, 3, 4, 4), 0.5, "global"),
        r"got N=1$",
    ),
    "3-D images, sampler": (lambda: UnMix()(torch.rand(4, 4, 4)), r"^images must be a 4-D"),
    "3-D images, mix": (
        lambda: mix_with_reversed(torch.rand(4, 4, 4), 0.5, "global"),
        r"^images must be a 4-D",
    ),
    "unknown mode": (lambda: mix4(mode="cutmix"), r"^mode must be one of \('global', 'region'\)"),
    "lam out of range": (lambda: mix4(lam=1.5, mode="global"), r"^lam must be a number in \[0, 1"),
    "lam tensor shape": (
        lambda: mix4(lam=torch.rand(3), mode="global"),
        r"^lam must be .*shape \(N,\)=\(4,\)",
    ),
    "box missing": (lambda: mix4(), r"^box is required in region mode"),
    "box in global mode": (lambda: mix4(mode="global", box=(0, 0, 1, 1)), r"^box must be None"),
    "box tensor in global mode": (
        lambda: mix4(mode="global", box=torch.zeros(4, 4, dtype=torch.long)),
        r"^box must be None",
    ),
    "box array of rows": (lambda: mix4(box=np.zeros((4, 4), dtype=int)), r"^box must be 4 ints"),
    "box outside image": (lambda: mix4(box=(0, 0, 5, 1)), r"^box must be 4 ints .*W=4"),
    "box reversed": (lambda: mix4(box=(2, 0, 1, 1)), r"^box must be 4 ints"),
    "box of floats": (lambda: mix4(box=(0.0, 0, 1, 1)), r"^box must be 4 ints"),
    "box of 3": (lambda: mix4(box=(0, 0, 1)), r"^box must be 4 ints"),
    "box tensor shape": (
        lambda: mix4(box=torch.zeros(3, 4, dtype=torch.long)),
        r"^box must be an integer tensor of shape \(N, 4\)",
    ),
    "box tensor float": (lambda: mix4(box=torch.zeros(4, 4)), r"^box must be an integer tensor"),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_call_arguments_raise(case):
    assert_one_line_value_error(*BAD_CALLS[case])


def test_batch_of_one_message_is_the_documented_one():
    with pytest.raises(ValueError) as error:
        UnMix()(torch.rand(1, 3, 4, 4), torch.Generator())
    expected = "Un-Mix needs a batch of at least 2 images to mix with its reversed self, got N=1"
    assert str(error.value) == expected
