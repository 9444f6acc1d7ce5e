"""Label assignment (docs/unmix.md section 2) checked against formulas written out row by row.

References below loop over rows and pair clean sample i with mixture i and with
mixture N-1-i by explicit index, so they share no flipping code with the module.
"""

import pytest
import torch
import torch.nn.functional as F

from unmix_ext.losses import (
    class_mix_loss,
    codes_mix_loss,
    moco_mix_loss,
    predictor_target_mix_loss,
    reversed_pair_loss,
    soft_cross_entropy,
)

N = 5  # odd: the middle sample is its own partner
D = 4
K = 6
TOL = dict(rtol=1e-5, atol=1e-5)


def rand(*shape, seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(requires_grad)


def probs(*shape, seed):
    return rand(*shape, seed=seed).softmax(dim=1)


def per_sample_lam():
    return torch.rand(N, generator=torch.Generator().manual_seed(99), dtype=torch.float64)


LAMS = [pytest.param(0.3, id="float-lam"), pytest.param(per_sample_lam(), id="per-sample-lam")]


def lam_at(lam, i):
    return lam[i] if isinstance(lam, torch.Tensor) else lam


def reference_mix(row_loss, lam):
    """Clean i against mixture i (its share lam_i) and mixture N-1-i (share 1 - lam_{N-1-i})."""
    total = 0.0
    for i in range(N):
        j = N - 1 - i
        total = total + lam_at(lam, i) * row_loss(i, i) + (1 - lam_at(lam, j)) * row_loss(i, j)
    return total / N


def reversed_rows(t):
    return t[[N - 1 - i for i in range(N)]]


def cosine_rows(p, z):
    return 2 - 2 * F.cosine_similarity(p, z, dim=-1)


def cosine_mean(p, z):
    return cosine_rows(p, z).mean()


def nt_xent(z1, z2, temperature=0.2):
    """In-batch NT-Xent over 2N anchors; the positive of row i is row i of the other view."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * len(z1), dtype=torch.bool), float("-inf"))
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, targets)


def moco_row(q, k, queue, temperature):
    logits = torch.cat([(q * k).sum().view(1), q @ queue]) / temperature
    return torch.logsumexp(logits, dim=0) - logits[0]


def soft_ce_row(z, q, temperature):
    return -sum(q[c] * torch.log_softmax(z / temperature, dim=0)[c] for c in range(len(z)))


def assert_one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_soft_cross_entropy_is_per_row_soft_target_ce():
    scores, codes = rand(N, K, seed=1), probs(N, K, seed=2)
    got = soft_cross_entropy(scores, codes, 0.1)
    assert got.shape == (N,)
    expected = torch.stack([soft_ce_row(scores[i], codes[i], 0.1) for i in range(N)])
    torch.testing.assert_close(got, expected, **TOL)


def test_reversed_pair_loss_float_lam_with_in_batch_contrastive_loss():
    other, mixed = rand(N, D, seed=1), rand(N, D, seed=2)
    got = reversed_pair_loss(nt_xent, other, mixed, 0.3)
    expected = 0.3 * nt_xent(other, mixed) + 0.7 * nt_xent(other, reversed_rows(mixed))
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("lam", LAMS)
def test_reversed_pair_loss_with_per_row_loss(lam):
    other, mixed = rand(N, D, seed=1), rand(N, D, seed=2)
    got = reversed_pair_loss(cosine_rows, other, mixed, lam)
    expected = reference_mix(lambda i, j: cosine_rows(other[i], mixed[j]), lam)
    torch.testing.assert_close(got, expected, **TOL)


def test_per_sample_weights_are_each_samples_share_in_each_mixture():
    # Images are one-hot (sample i is e_i): mixture j's pixels are each sample's share in it.
    lam = per_sample_lam()
    images = torch.eye(N, dtype=torch.float64)
    mixtures = lam[:, None] * images + (1 - lam[:, None]) * reversed_rows(images)
    # With other = C and mixed = one-hot mixture ids, d loss / d C[i, j] weighs pair (i, j).
    pair_scores = torch.zeros(N, N, dtype=torch.float64, requires_grad=True)
    mixture_ids = torch.eye(N, dtype=torch.float64)
    loss = reversed_pair_loss(lambda o, m: (o * m).sum(dim=1), pair_scores, mixture_ids, lam)
    loss.backward()
    torch.testing.assert_close(pair_scores.grad * N, mixtures.T, **TOL)


@pytest.mark.parametrize("lam", LAMS)
def test_reversed_pair_loss_flips_every_tuple_element(lam):
    other = (rand(N, D, seed=1), rand(N, 3, seed=2))
    mixed = (rand(N, D, seed=3), rand(N, 3, seed=4))

    def pair_rows(o, m):
        return cosine_rows(o[0], m[0]) + (o[1] * m[1]).sum(dim=1)

    got = reversed_pair_loss(pair_rows, other, mixed, lam)
    expected = reference_mix(
        lambda i, j: cosine_rows(other[0][i], mixed[0][j]) + (other[1][i] * mixed[1][j]).sum(),
        lam,
    )
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("lam", LAMS)
def test_moco_two_softmaxes_per_mixture_with_queue_negatives(lam):
    q = F.normalize(rand(N, D, seed=1), dim=1)
    keys = F.normalize(rand(N, D, seed=2), dim=1)
    queue = F.normalize(rand(D, K, seed=3), dim=0)
    got = moco_mix_loss(q, keys, queue, 0.2, lam)
    expected = reference_mix(lambda i, j: moco_row(q[j], keys[i], queue, 0.2), lam)
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("lam", LAMS)
def test_symmetric_moco_is_the_sum_of_two_calls(lam):
    q = F.normalize(rand(N, D, seed=1), dim=1)
    keys = [F.normalize(rand(N, D, seed=s), dim=1) for s in (2, 3)]
    queue = F.normalize(rand(2, D, K, seed=4), dim=1)
    got = moco_mix_loss(q, keys[1], queue[1], 0.2, lam) + moco_mix_loss(
        q, keys[0], queue[0], 0.2, lam
    )
    expected = sum(
        reference_mix(lambda i, j: moco_row(q[j], keys[v][i], queue[v], 0.2), lam) for v in (0, 1)
    )
    torch.testing.assert_close(got, expected, **TOL)


def predictor_inputs():
    return dict(
        p_other=rand(N, D, seed=1),
        z_other=rand(N, D, seed=2),
        p_mixed=rand(N, D, seed=3, requires_grad=True),
        z_mixed=rand(N, D, seed=4, requires_grad=True),
    )


@pytest.mark.parametrize("lam", LAMS)
@pytest.mark.parametrize("target_side", ["both", "online"])
def test_predictor_target_both_ways_or_online_only(lam, target_side):
    x = predictor_inputs()
    got = predictor_target_mix_loss(cosine_rows, **x, lam=lam, target_side=target_side)

    def row_loss(i, j):
        online = cosine_rows(x["p_mixed"][j], x["z_other"][i])
        if target_side == "online":
            return online
        return online + cosine_rows(x["p_other"][i], x["z_mixed"][j])

    torch.testing.assert_close(got, reference_mix(row_loss, lam), **TOL)


def test_predictor_online_ignores_z_mixed_and_accepts_none():
    x = predictor_inputs()
    with_target = predictor_target_mix_loss(cosine_mean, **x, lam=0.3, target_side="online")
    x["z_mixed"] = None
    without = predictor_target_mix_loss(cosine_mean, **x, lam=0.3, target_side="online")
    torch.testing.assert_close(with_target, without, **TOL)


@pytest.mark.parametrize("lam", LAMS)
def test_codes_scores_against_codes_both_ways(lam):
    z_m, q_m = rand(N, K, seed=1), probs(N, K, seed=2)
    z_s, q_s = rand(N, K, seed=3), probs(N, K, seed=4)
    got = codes_mix_loss(z_m, q_m, z_s, q_s, 0.1, lam)
    expected = reference_mix(
        lambda i, j: soft_ce_row(z_m[j], q_s[i], 0.1) + soft_ce_row(z_s[i], q_m[j], 0.1), lam
    )
    torch.testing.assert_close(got, expected, **TOL)


def test_lam_one_keeps_only_the_direct_pairing():
    other, mixed = rand(N, D, seed=1), rand(N, D, seed=2)
    torch.testing.assert_close(
        reversed_pair_loss(nt_xent, other, mixed, 1.0), nt_xent(other, mixed), **TOL
    )

    x = predictor_inputs()
    torch.testing.assert_close(
        predictor_target_mix_loss(cosine_mean, **x, lam=1.0),
        cosine_mean(x["p_mixed"], x["z_other"]) + cosine_mean(x["p_other"], x["z_mixed"]),
        **TOL,
    )

    queue = rand(D, K, seed=3)
    torch.testing.assert_close(
        moco_mix_loss(mixed, other, queue, 0.2, 1.0),
        torch.stack([moco_row(mixed[i], other[i], queue, 0.2) for i in range(N)]).mean(),
        **TOL,
    )

    z_m, q_m = rand(N, K, seed=4), probs(N, K, seed=5)
    z_s, q_s = rand(N, K, seed=6), probs(N, K, seed=7)
    torch.testing.assert_close(
        codes_mix_loss(z_m, q_m, z_s, q_s, 0.1, 1.0),
        soft_cross_entropy(z_m, q_s, 0.1).mean() + soft_cross_entropy(z_s, q_m, 0.1).mean(),
        **TOL,
    )


def test_gradients_reach_every_mixed_input_and_nothing_is_detached():
    lam = per_sample_lam()
    mixed = rand(N, D, seed=1, requires_grad=True)
    reversed_pair_loss(cosine_rows, rand(N, D, seed=2), mixed, lam).backward()

    q_mixed = rand(N, D, seed=3, requires_grad=True)
    moco_mix_loss(q_mixed, rand(N, D, seed=4), rand(D, K, seed=5), 0.2, lam).backward()

    x = predictor_inputs()
    predictor_target_mix_loss(cosine_rows, **x, lam=lam).backward()
    online = predictor_inputs()
    predictor_target_mix_loss(cosine_rows, **online, lam=lam, target_side="online").backward()

    scores_m = rand(N, K, seed=6, requires_grad=True)
    codes_m = probs(N, K, seed=7).requires_grad_(True)
    codes_mix_loss(scores_m, codes_m, rand(N, K, seed=8), probs(N, K, seed=9), 0.1, lam).backward()

    for t in (mixed, q_mixed, x["p_mixed"], x["z_mixed"], online["p_mixed"], scores_m, codes_m):
        assert t.grad is not None and t.grad.abs().sum() > 0
    assert online["z_mixed"].grad is None


def test_per_sample_lam_with_scalar_loss_is_rejected():
    with pytest.raises(ValueError) as excinfo:
        reversed_pair_loss(nt_xent, rand(N, D, seed=1), rand(N, D, seed=2), per_sample_lam())
    assert_one_line_error(excinfo, "per-sample lam needs a loss that returns one value per row")
    with pytest.raises(ValueError) as excinfo:
        predictor_target_mix_loss(cosine_mean, **predictor_inputs(), lam=per_sample_lam())
    assert_one_line_error(excinfo, "per-sample lam needs a loss that returns one value per row")


def test_per_sample_lam_of_wrong_length_is_rejected():
    with pytest.raises(ValueError) as excinfo:
        reversed_pair_loss(cosine_rows, rand(N, D, seed=1), rand(N, D, seed=2), torch.rand(N + 1))
    assert_one_line_error(excinfo, "lam")


def test_unknown_target_side_is_rejected():
    with pytest.raises(ValueError) as excinfo:
        predictor_target_mix_loss(cosine_mean, **predictor_inputs(), lam=0.3, target_side="target")
    assert_one_line_error(excinfo, "target_side", "'both'", "'online'", "'target'")


def test_both_sides_without_z_mixed_is_rejected():
    x = predictor_inputs()
    x["z_mixed"] = None
    with pytest.raises(ValueError) as excinfo:
        predictor_target_mix_loss(cosine_mean, **x, lam=0.3)
    assert_one_line_error(excinfo, "z_mixed", "online")


GOOD = rand(N, D, seed=1)
SHORT = rand(N - 1, D, seed=2)
WIDE = rand(N, D + 1, seed=3)
QUEUE = rand(D, K, seed=4)
SCORES, CODES = rand(N, K, seed=5), probs(N, K, seed=6)


@pytest.mark.parametrize(
    "name, fn, args",
    [
        ("mixed", reversed_pair_loss, (cosine_mean, GOOD, SHORT, 0.3)),
        ("mixed", reversed_pair_loss, (cosine_mean, (GOOD,), GOOD, 0.3)),
        ("mixed[1]", reversed_pair_loss, (cosine_mean, (GOOD, GOOD), (GOOD, WIDE), 0.3)),
        ("q_mixed", moco_mix_loss, (GOOD, WIDE, QUEUE, 0.2, 0.3)),
        ("queue", moco_mix_loss, (GOOD, GOOD, QUEUE[:-1], 0.2, 0.3)),
        ("p_mixed", predictor_target_mix_loss, (cosine_mean, GOOD, GOOD, SHORT, GOOD, 0.3)),
        ("z_mixed", predictor_target_mix_loss, (cosine_mean, GOOD, GOOD, GOOD, SHORT, 0.3)),
        ("scores_mixed", codes_mix_loss, (SCORES[:-1], CODES, SCORES, CODES, 0.1, 0.3)),
        ("codes_mixed", codes_mix_loss, (SCORES, CODES[:, :-1], SCORES, CODES, 0.1, 0.3)),
    ],
    ids=["tensor", "structure", "tuple", "moco-keys", "moco-queue", "p", "z", "scores", "codes"],
)
def test_shape_mismatch_names_the_argument(name, fn, args):
    with pytest.raises(ValueError) as excinfo:
        fn(*args)
    assert_one_line_error(excinfo, name)
    assert str(excinfo.value).startswith(name)


@pytest.mark.parametrize("lam", LAMS)
def test_class_mix_loss_counts_each_mixture_in_both_source_classes(lam):
    # any per-anchor supervised loss: here a softmax over 3 class prototypes
    prototypes = rand(D, 3, seed=21)
    labels = torch.tensor([0, 2, 1, 1, 0])
    mixed = rand(N, D, seed=22)

    def anchor_loss(anchors, classes):
        return F.cross_entropy(anchors @ prototypes, classes, reduction="none")

    def row_loss(i, m):  # mixture m as a member of clean sample i's class
        return F.cross_entropy((mixed[m] @ prototypes)[None], labels[i][None])

    expected = reference_mix(row_loss, lam)
    torch.testing.assert_close(class_mix_loss(anchor_loss, mixed, labels, lam), expected, **TOL)


def test_class_mix_loss_needs_one_label_per_mixture():
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        class_mix_loss(lambda a, y: a.sum(1), rand(N, D, seed=1), torch.zeros(4, dtype=torch.long), 0.5)
