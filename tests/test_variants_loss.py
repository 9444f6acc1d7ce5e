"""The Un-Mix variants add the loss of docs/unmix.md section 2, term by term.

Each test runs one variant's ``training_step`` outside a Trainer, on a tiny float64
model with fixed weights and a fixed lam, records what it logs, and checks:

- ``unmix/mix_loss`` against the formula of docs/unmix.md section 2 written out here: the mixture M is
  built here, the model's own submodules run on the clean views and on M (train mode,
  so BatchNorm uses batch statistics and a separate forward reproduces the step's
  values), partners are found by explicit index reversal, and ``l`` is the base
  method's own solo-learn loss (MoCo's InfoNCE, nearest neighbours and the codes'
  cross-entropy are written here). Nothing from ``unmix_ext.losses`` is used;
- ``unmix/base_loss`` against the base method's own step on the same batch, weights
  and state, and the step's return value against their sum.

The expected values are computed before the step, so they see queues, support sets
and DINO's centre as they were before the base step updated them (the constructors
fill queues with seeded random keys). The momentum network's biases and norm
affines are moved off their online twins first: at construction both networks are
equal, which would hide a mix-up between online and target outputs.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from solo.losses.barlow import barlow_loss_func
from solo.losses.byol import byol_loss_func
from solo.losses.nnclr import nnclr_loss_func
from solo.losses.ressl import ressl_loss_func
from solo.losses.simclr import simclr_loss_func
from solo.losses.simsiam import simsiam_loss_func
from solo.losses.vicreg import vicreg_loss_func
from solo.utils.sinkhorn_knopp import SinkhornKnopp

N, SIZE = 8, 8  # 8x8 crops: 1/16 of the CIFAR cost, same code paths
REVERSED = torch.arange(N - 1, -1, -1)  # partner of sample i is sample N-1-i
LAM = 0.3
TOL = dict(rel=1e-7, abs=1e-7)  # float64 throughout

# Small heads and queues keep every step well under a second on a CPU.
HEADS = dict(proj_hidden_dim=64, proj_output_dim=32)
SMALL = {
    "simclr": HEADS,
    "nnclr": dict(HEADS, pred_hidden_dim=32, queue_size=24),
    "byol": dict(HEADS, pred_hidden_dim=32),
    "simsiam": dict(HEADS, pred_hidden_dim=32),
    "nnbyol": dict(HEADS, pred_hidden_dim=32, queue_size=24),
    "nnsiam": dict(HEADS, pred_hidden_dim=32, queue_size=24),
    "swav": dict(HEADS, num_prototypes=16, queue_size=0),
    "dino": dict(HEADS, num_prototypes=16),
    "deepclusterv2": dict(HEADS, num_prototypes=[6, 6]),
    "barlow_twins": HEADS,
    "vicreg": HEADS,
    "ressl": dict(HEADS, queue_size=24),
    "mocov2plus": dict(HEADS, queue_size=16),
    "mocov2": dict(HEADS, queue_size=16),
    # one whitening slice of the whole batch: whitening ignores row order, so the base's
    # and the mixture's random slicings give the same values
    "wmse": dict(HEADS, proj_output_dim=4, whitening_size=N, whitening_iters=1),
    "mocov3": dict(HEADS, pred_hidden_dim=32),
    "vibcreg": dict(HEADS, iternorm=True),
    "supcon": HEADS,
    "all4one": dict(HEADS, pred_hidden_dim=32, queue_size=24),
}


# ---- building, stepping ---------------------------------------------------------------
@contextmanager
def default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def float64_single_thread():
    # float64 everywhere, including tensors the losses create (Barlow Twins' BatchNorm).
    # One thread: on these tiny tensors a second OpenMP thread only adds waiting, and
    # on a busy machine it makes each BatchNorm call ~100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with default_dtype(torch.float64):
        yield
    torch.set_num_threads(threads)


def base_name(name: str) -> str:
    return name[: -len("_unmix")]


def build_pair(build_method, name: str, **overrides):
    """(variant, base): float64, train mode, same weights and state.

    ``unmix_*`` overrides go to the variant only (default: lam 0.3, global mode), the
    others to both.
    """
    unmix = {"unmix_lam": LAM, "unmix_prob": 1.0}
    common = dict(SMALL[base_name(name)], knn_eval=False)
    for key, value in overrides.items():
        (unmix if key.startswith("unmix_") else common)[key] = value
    with default_dtype(torch.float32):  # initialising in float32 is ~3x faster
        variant = build_method(name, **common, **unmix)
        base = build_method(base_name(name), **common)
    variant.double().train()
    move_momentum_off_online(variant)
    base.double().train().load_state_dict(variant.state_dict())
    if hasattr(variant, "transformer_encoder"):  # All4One: dropout would make two passes differ
        no_dropout(variant)
        no_dropout(base)
    for model in (variant, base):
        if hasattr(model, "sk_iters"):  # SwAV builds its Sinkhorn in on_train_start
            model.sk = SinkhornKnopp(model.sk_iters, model.sk_epsilon, 1)
    return variant, base


def no_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0


@torch.no_grad()
def move_momentum_off_online(model) -> None:
    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        # biases and norm affines suffice to make every momentum module differ
        if name.startswith("momentum_") and p.dim() == 1:
            p.add_(0.5 * torch.randn(p.shape, generator=g))


def two_view_batch():
    g = torch.Generator().manual_seed(7)
    views = [torch.randn(N, 3, SIZE, SIZE, generator=g) for _ in range(2)]
    return [torch.arange(N), views, torch.arange(N) % 4]


def run_step(model, batch):
    """(loss, logs) of one ``training_step``; logs maps each logged name to a float."""
    logs = {}
    model.log = lambda name, value, *args, **kwargs: logs.__setitem__(name, value)
    model.log_dict = lambda metrics, *args, **kwargs: logs.update(metrics)
    torch.manual_seed(0)
    with torch.no_grad():  # values only: no graph to keep
        loss = model.training_step(batch, 0)
    return float(loss), {k: float(v) for k, v in logs.items()}


def check_variant(build_method, name, expected_mix, **overrides):
    """Builds ``name`` and its base, then :func:`check_step` with ``expected_mix(variant, views)``.

    Returns (variant, base) after the step.
    """
    variant, base = build_pair(build_method, name, **overrides)
    batch = two_view_batch()
    with torch.no_grad():
        expected = expected_mix(variant, batch[1])
    check_step(variant, base, expected, batch)
    return variant, base


def check_step(variant, base, expected_mix, batch, lam=LAM, is_global=True):
    """Steps base and variant on ``batch``; the variant's logs must match."""
    base_loss, _ = run_step(base, batch)
    loss, logs = run_step(variant, batch)
    assert logs["unmix/mix_loss"] == pytest.approx(float(expected_mix), **TOL)
    assert logs["unmix/base_loss"] == pytest.approx(base_loss, **TOL)
    assert loss == pytest.approx(base_loss + float(expected_mix), **TOL)
    assert logs["unmix/lam"] == pytest.approx(float(torch.as_tensor(lam).float().mean()))
    assert logs["unmix/global"] == float(is_global)


def mixture(x, lam):
    """M = lam * X + (1 - lam) * X reversed; lam a float or (N,)."""
    lam = torch.as_tensor(lam, dtype=x.dtype)
    if lam.dim():
        lam = lam.view(-1, 1, 1, 1)
    return lam * x + (1 - lam) * x[REVERSED]


def weigh(direct, flipped, lam):
    """lam * direct + (1 - lam) * flipped; per-sample: row i of flipped has 1 - lam[N-1-i]."""
    if torch.is_tensor(lam) and lam.dim():
        lam = lam.to(direct.dtype)
        return (lam * direct + (1 - lam[REVERSED]) * flipped).mean()
    return (lam * direct + (1 - lam) * flipped).mean()


# ---- the model's own outputs ----------------------------------------------------------
def projection(model, x):
    return model.projector(model.encoder(x))


def momentum_projection(model, x):
    return model.momentum_projector(model.momentum_encoder(x))


def nearest(model, z):
    """Support-set entry with the largest dot product with each (normalised) row of z."""
    return model.queue[(z @ model.queue.T).argmax(dim=1)]


# ---- MoCo -----------------------------------------------------------------------------
def info_nce_rows(q, k, queue, temperature):
    """(N,) CE([q.k, q.queue] / T, label 0), written out."""
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / temperature
    return -F.log_softmax(logits, dim=1)[:, 0]


def moco_expected(model, views, m, lam, key_views, queue_of, weight):
    q_m = F.normalize(projection(model, m), dim=-1)
    total = 0.0
    for j in key_views:
        k = F.normalize(momentum_projection(model, views[j]), dim=-1)
        queue = queue_of(j)
        direct = info_nce_rows(q_m, k, queue, model.temperature)
        flipped = info_nce_rows(q_m[REVERSED], k, queue, model.temperature)
        total = total + weight * weigh(direct, flipped, lam)
    return total


@pytest.mark.parametrize("symmetric", [False, True])
def test_mocov2_mixture_contrasts_with_clean_keys_and_the_one_queue(build_method, symmetric):
    # asymmetric: keys of view 1 only; symmetric adds the keys of view 0; weight 1 each
    key_views = [1, 0] if symmetric else [1]
    variant, base = check_variant(
        build_method, "mocov2_unmix", symmetric=symmetric,
        expected_mix=lambda model, views: moco_expected(
            model, views, mixture(views[0], LAM), LAM, key_views,
            queue_of=lambda j: model.queue, weight=1.0))
    # only clean keys entered the queue, exactly as in the base step
    assert torch.equal(variant.queue, base.queue)


def test_mocov2plus_mixture_contrasts_with_both_keys_each_with_its_queue(build_method):
    # keys of view j pair with queue[j], each term halved as the base averages its two
    variant, base = check_variant(
        build_method, "mocov2plus_unmix",
        expected_mix=lambda model, views: moco_expected(
            model, views, mixture(views[0], LAM), LAM, key_views=[1, 0],
            queue_of=lambda j: model.queue[j], weight=0.5))
    assert torch.equal(variant.queue, base.queue)


def test_mocov2plus_per_sample_lam_weights_flipped_row_i_by_partner_lam(build_method):
    variant, base = build_pair(build_method, "mocov2plus_unmix", unmix_lam=None,
                               unmix_per_sample=True)
    batch = two_view_batch()
    views = batch[1]
    # the step draws from unmix_generator(batch_idx): the same draw, repeated here
    drawn = variant.unmix(views[0], variant.unmix_generator(0))
    lam = drawn.lam
    assert lam.shape == (N,) and len(set(lam.tolist())) == N
    m = mixture(views[0], lam)
    torch.testing.assert_close(drawn.images, m, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        expected = moco_expected(variant, views, m, lam, key_views=[1, 0],
                                 queue_of=lambda j: variant.queue[j], weight=0.5)
        # weighting flipped row i by its own lam[i] would give a clearly different value
        own_lam = moco_expected(variant, views, m, lam[REVERSED].clone(), key_views=[1, 0],
                                queue_of=lambda j: variant.queue[j], weight=0.5)
    assert abs(float(expected) - float(own_lam)) > 1e-3
    check_step(variant, base, expected, batch, lam=lam)


# ---- in-batch contrastive -------------------------------------------------------------
def simclr_expected(model, views, m, lam):
    z_other, z_m = projection(model, views[1]), projection(model, m)
    direct = simclr_loss_func(z_other, z_m, temperature=model.temperature)
    flipped = simclr_loss_func(z_other, z_m[REVERSED], temperature=model.temperature)
    return weigh(direct, flipped, lam)


def test_simclr_mixture_is_nt_xent_with_the_other_view_and_its_reversal(build_method):
    check_variant(build_method, "simclr_unmix", expected_mix=lambda model, views: simclr_expected(
        model, views, mixture(views[0], LAM), LAM))


def test_lam_one_leaves_only_the_direct_term(build_method):
    variant, base = build_pair(build_method, "simclr_unmix", unmix_lam=1.0)
    batch = two_view_batch()
    views = batch[1]
    with torch.no_grad():
        z_other, z_m = projection(variant, views[1]), projection(variant, views[0])
        direct = simclr_loss_func(z_other, z_m, temperature=variant.temperature)
        flipped = simclr_loss_func(z_other, z_m[REVERSED], temperature=variant.temperature)
    assert abs(float(flipped - direct)) > 1e-2  # a leftover flipped term would show
    check_step(variant, base, direct, batch, lam=1.0)


def test_region_mode_pastes_the_drawn_box_and_uses_the_effective_lam(build_method):
    variant, base = build_pair(build_method, "simclr_unmix", unmix_prob=0.0)
    batch = two_view_batch()
    x = batch[1][0]
    drawn = variant.unmix(x, variant.unmix_generator(0))
    assert drawn.mode == "region"
    x1, y1, x2, y2 = drawn.box
    assert 0 < (x2 - x1) * (y2 - y1) < SIZE * SIZE
    m = x.clone()
    m[:, :, y1:y2, x1:x2] = x[REVERSED][:, :, y1:y2, x1:x2]
    lam = 1 - (x2 - x1) * (y2 - y1) / (SIZE * SIZE)
    assert lam != pytest.approx(LAM, abs=1e-3)  # the box, not the drawn lam, sets the weight
    torch.testing.assert_close(drawn.images, m, rtol=0, atol=0)
    with torch.no_grad():
        expected = simclr_expected(variant, batch[1], m, lam)
    check_step(variant, base, expected, batch, lam=lam, is_global=False)


def test_nnclr_mixture_pairs_neighbours_and_predictions_both_ways(build_method):
    def expected_mix(model, views):
        t = model.temperature
        z_other, z_m = projection(model, views[1]), projection(model, mixture(views[0], LAM))
        p_other, p_m = model.predictor(z_other), model.predictor(z_m)
        # neighbours from the support set before the base step adds this batch
        nn_other = nearest(model, F.normalize(z_other, dim=-1))
        nn_m = nearest(model, F.normalize(z_m, dim=-1))
        direct = (nnclr_loss_func(nn_other, p_m, temperature=t)
                  + nnclr_loss_func(nn_m, p_other, temperature=t)) / 2
        flipped = (nnclr_loss_func(nn_other, p_m[REVERSED], temperature=t)
                   + nnclr_loss_func(nn_m[REVERSED], p_other, temperature=t)) / 2
        return weigh(direct, flipped, LAM)

    variant, base = check_variant(build_method, "nnclr_unmix", expected_mix)
    assert torch.equal(variant.queue, base.queue)  # clean embeddings only


# ---- predictor / target ---------------------------------------------------------------
PREDICTOR_TARGET = {
    # name: (the base's loss, its weight per term, target of images x with projection z)
    "byol_unmix": (byol_loss_func, 1.0, lambda model, x, z: momentum_projection(model, x)),
    "simsiam_unmix": (simsiam_loss_func, 0.5, lambda model, x, z: z),
    "nnbyol_unmix": (byol_loss_func, 1.0, lambda model, x, z: nearest(
        model, F.normalize(momentum_projection(model, x), dim=-1))),
    "nnsiam_unmix": (simsiam_loss_func, 0.5, lambda model, x, z: nearest(
        model, F.normalize(z, dim=-1))),
}


def predictor_target_expected(name, model, views, m, lam, target_side="both", other=1):
    loss_fn, weight, target = PREDICTOR_TARGET[name]
    z_other, z_m = projection(model, views[other]), projection(model, m)
    p_other, p_m = model.predictor(z_other), model.predictor(z_m)
    t_other = target(model, views[other], z_other)
    direct = loss_fn(p_m, t_other)
    flipped = loss_fn(p_m[REVERSED], t_other)
    if target_side == "both":
        t_m = target(model, m, z_m)
        direct = direct + loss_fn(p_other, t_m)
        flipped = flipped + loss_fn(p_other, t_m[REVERSED])
    return weight * weigh(direct, flipped, lam)


@pytest.mark.parametrize("name, target_side", [
    ("byol_unmix", "both"), ("byol_unmix", "online"), ("simsiam_unmix", "both"),
    ("nnbyol_unmix", "both"), ("nnsiam_unmix", "both"),
])
def test_predictor_meets_the_target_of_the_other_side(build_method, name, target_side):
    check_variant(
        build_method, name, unmix_target_side=target_side,
        expected_mix=lambda model, views: predictor_target_expected(
            name, model, views, mixture(views[0], LAM), LAM, target_side))


def test_mixing_view1_pairs_the_mixture_with_view0(build_method):
    check_variant(
        build_method, "byol_unmix", unmix_view=1,
        expected_mix=lambda model, views: predictor_target_expected(
            "byol_unmix", model, views, mixture(views[1], LAM), LAM, other=0))


# ---- codes / teacher ------------------------------------------------------------------
def soft_ce_rows(scores, codes, temperature):
    """(N,) -sum_k codes_k log softmax(scores / T)_k."""
    return -(codes * F.log_softmax(scores / temperature, dim=1)).sum(dim=1)


def codes_expected(z_m, q_m, z_other, q_other, temperature, lam, base_terms=2):
    """Spec: lam*[l(z_m, q_s) + l(z_s, q_m)] + (1-lam)*[l(flip z_m, q_s) + l(z_s, flip q_m)].

    solo-learn's SwAV and DINO losses are the mean over ``base_terms`` swaps (2 with two
    crops, 2 * (crops - 1) with small crops), so each mixture term is divided by it too.
    """
    direct = soft_ce_rows(z_m, q_other, temperature) + soft_ce_rows(z_other, q_m, temperature)
    flipped = (soft_ce_rows(z_m[REVERSED], q_other, temperature)
               + soft_ce_rows(z_other, q_m[REVERSED], temperature))
    return weigh(direct, flipped, lam) / base_terms


def swav_scores(model, x):
    return model.prototypes(F.normalize(projection(model, x)))


def test_swav_mixture_swaps_sinkhorn_codes_with_the_other_view(build_method):
    def expected_mix(model, views):
        z_other, z_m = (swav_scores(model, x) for x in (views[1], mixture(views[0], LAM)))
        # queue_size=0: each batch's codes are Sinkhorn over its own scores
        return codes_expected(z_m, model.sk(z_m), z_other, model.sk(z_other),
                              model.temperature, LAM)

    check_variant(build_method, "swav_unmix", expected_mix)


def test_swav_with_small_crops_mixes_the_first_large_crop_only(build_method):
    # 2 large + 2 small crops: the base loss averages 2 * 3 swaps, the small crops enter
    # it only, and each mixture term weighs 1/6
    variant, base = build_pair(build_method, "swav_unmix", num_small_crops=2)
    batch = two_view_batch()
    g = torch.Generator().manual_seed(8)
    batch[1] += [torch.randn(N, 3, SIZE // 2, SIZE // 2, generator=g) for _ in range(2)]
    views = batch[1]
    with torch.no_grad():
        scores = [swav_scores(variant, x) for x in views]
        codes = [variant.sk(s) for s in scores[:2]]
        base_swav = sum(soft_ce_rows(scores[v], codes[i], variant.temperature).mean()
                        for i in range(2) for v in range(4) if v != i) / 6
        z_m = swav_scores(variant, mixture(views[0], LAM))
        expected = codes_expected(z_m, variant.sk(z_m), scores[1], codes[1],
                                  variant.temperature, LAM, base_terms=6)
    check_step(variant, base, expected, batch)
    _, logs = run_step(base, batch)
    assert logs["train_swav_loss"] == pytest.approx(float(base_swav), **TOL)


def test_dino_mixture_swaps_teacher_distributions_with_the_other_view(build_method):
    variant, base = build_pair(build_method, "dino_unmix")
    loss_fn = variant.dino_loss_func
    with torch.no_grad():
        loss_fn.center.normal_(generator=torch.Generator().manual_seed(2))
    base.load_state_dict(variant.state_dict())
    center_before = loss_fn.center.clone()
    batch = two_view_batch()
    views = batch[1]
    with torch.no_grad():
        m = mixture(views[0], LAM)
        z_other, z_m = (variant.head(variant.encoder(x)) for x in (views[1], m))

        def teacher(x):  # centred with the centre before this step, sharpened
            logits = variant.momentum_head(variant.momentum_encoder(x))
            return F.softmax((logits - center_before) / loss_fn.teacher_temp_schedule[0], dim=-1)

        expected = codes_expected(z_m, teacher(m), z_other, teacher(views[1]),
                                  loss_fn.student_temp, LAM)
    check_step(variant, base, expected, batch)
    # the centre moved by the clean teacher outputs only, as in the base step
    assert not torch.equal(loss_fn.center, center_before)
    assert torch.equal(loss_fn.center, base.dino_loss_func.center)


def test_deepclusterv2_mixture_scores_against_the_clean_assignments(build_method):
    variant, base = build_pair(build_method, "deepclusterv2_unmix")
    g = torch.Generator().manual_seed(3)
    heads = [len(p.weight) for p in variant.prototypes]  # prototypes per head
    assignments = torch.stack([torch.randint(k, (N,), generator=g) for k in heads])
    assignments[0, 2] = -1  # not assigned yet: contributes nothing
    for model in (variant, base):  # what on_train_start / on_train_epoch_start prepare
        model.assignments = assignments.clone()
        model.local_memory_index = torch.zeros(N, dtype=torch.long)
        model.local_memory_embeddings = torch.zeros(2, N, model.proj_output_dim)
    batch = two_view_batch()
    views = batch[1]
    with torch.no_grad():
        z_m = F.normalize(projection(variant, mixture(views[0], LAM)))
        direct, flipped = torch.zeros(N), torch.zeros(N)
        for proto, codes in zip(variant.prototypes, assignments):
            log_p = F.log_softmax(proto(z_m) / variant.temperature, dim=1)
            rows = torch.arange(N)
            assigned = codes >= 0
            # row i: mixture i (direct) or mixture N-1-i (flipped) against sample i's cluster
            direct -= torch.where(assigned, log_p[rows, codes.clamp(min=0)], 0) / len(heads)
            flipped -= (torch.where(assigned, log_p[REVERSED, codes.clamp(min=0)], 0)
                        / len(heads))
        # one direction only: a mixture has no k-means assignment; weighted like one of
        # the base's two views
        expected = weigh(direct, flipped, LAM) / 2
    check_step(variant, base, expected, batch)


# ---- general rule ---------------------------------------------------------------------
GENERAL_RULE = {
    "barlow_twins_unmix": lambda model: lambda a, b: barlow_loss_func(
        a, b, lamb=model.lamb, scale_loss=model.scale_loss),
    "vicreg_unmix": lambda model: lambda a, b: vicreg_loss_func(
        a, b, sim_loss_weight=model.sim_loss_weight, var_loss_weight=model.var_loss_weight,
        cov_loss_weight=model.cov_loss_weight),
}


@pytest.mark.parametrize("name", sorted(GENERAL_RULE))
def test_general_rule_uses_the_method_loss_on_other_and_mixture(build_method, name):
    def expected_mix(model, views):
        pair_loss = GENERAL_RULE[name](model)
        z_other, z_m = projection(model, views[1]), projection(model, mixture(views[0], LAM))
        return weigh(pair_loss(z_other, z_m), pair_loss(z_other, z_m[REVERSED]), LAM)

    check_variant(build_method, name, expected_mix)


def test_ressl_mixture_is_a_query_against_the_clean_key_of_view1(build_method):
    def expected_mix(model, views):
        tq, tk = model.temperature_q, model.temperature_k
        q_m = F.normalize(projection(model, mixture(views[0], LAM)), dim=-1)
        k = F.normalize(momentum_projection(model, views[1]), dim=-1)
        queue = model.queue.clone()  # before the base step enqueues k
        return weigh(ressl_loss_func(q_m, k, queue, tq, tk),
                     ressl_loss_func(q_m[REVERSED], k, queue, tq, tk), LAM)

    variant, base = check_variant(build_method, "ressl_unmix", expected_mix)
    assert torch.equal(variant.queue, base.queue)


# ---- base:mixture 1:1 -----------------------------------------------------------------
# SupCon's mixture is an anchor only, never a candidate: no base term mirrors it (its weight is
# checked in test_supcon_mixture_anchors_against_the_clean_rows_of_both_classes)
VARIANTS = sorted(f"{name}_unmix" for name in SMALL if name != "supcon")


@pytest.mark.parametrize("name", VARIANTS)
def test_mixture_term_weighs_what_the_base_term_it_mirrors_weighs(build_method, name):
    # lam 1: M is view 0, so each mixture term is the base term it mirrors (the base
    # losses are symmetric in their two views) and any extra factor between them shows
    variant, _ = build_pair(build_method, name, unmix_lam=1.0)
    batch = two_view_batch()
    share = 1.0
    if name in ("mocov2plus_unmix", "mocov3_unmix"):
        # symmetric: the mixture also meets the key of its own view, which mirrors the
        # base term of the other view's query only when both views are equal
        batch[1][1] = batch[1][0].clone()
    if name == "deepclusterv2_unmix":
        # one direction for its two base views (a mixture has no k-means assignment): with
        # both views equal the mixture is one of two equal base terms
        batch[1][1] = batch[1][0].clone()
        share = 0.5
        variant.assignments = torch.stack([torch.arange(N) % len(p.weight)
                                           for p in variant.prototypes])
        variant.local_memory_index = torch.zeros(N, dtype=torch.long)
        variant.local_memory_embeddings = torch.zeros(2, N, variant.proj_output_dim)
    _, logs = run_step(variant, batch)
    # the base step's loss less its online (and momentum) classifiers' losses
    method_loss = (logs["unmix/base_loss"] - logs["train_class_loss"]
                   - logs.get("train_momentum_class_loss", 0.0))
    assert abs(method_loss) > 1e-3
    assert logs["unmix/mix_loss"] == pytest.approx(share * method_loss, rel=1e-6, abs=1e-9)


# ---- the methods of newer solo-learn ----------------------------------------------------
def mocov3_rows(q, k, temperature):
    """(N,) 2T * CE(q k^T / T, i), q and k normalised, written out."""
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / temperature
    return -2 * temperature * torch.diagonal(F.log_softmax(logits, dim=1))


def test_mocov3_mixture_predicts_both_clean_key_sets_in_batch(build_method):
    def expected_mix(model, views):
        q_m = model.predictor(projection(model, mixture(views[0], LAM)))
        total = 0.0
        for j in (1, 0):  # symmetric base: both clean key sets, weight 1 each
            k = momentum_projection(model, views[j])
            total = total + weigh(mocov3_rows(q_m, k, model.temperature),
                                  mocov3_rows(q_m[REVERSED], k, model.temperature), LAM)
        return total

    check_variant(build_method, "mocov3_unmix", expected_mix)


def vibcreg_written_out(model, a, b):
    def covariance(z):
        z = z - z.mean(0)
        z = z / z.norm(dim=0)
        c = z.T @ z
        return (c - torch.diag(torch.diag(c))).pow(2).sum() / c.numel()

    def variance(z):
        return F.relu(1 - (z.var(0) + 1e-4).sqrt()).mean()

    return (model.sim_loss_weight * ((a - b) ** 2).mean()
            + model.var_loss_weight * (variance(a) + variance(b))
            + model.cov_loss_weight * (covariance(a) + covariance(b)))


def test_vibcreg_mixture_is_its_loss_on_other_and_mixture(build_method):
    def expected_mix(model, views):
        z_other, z_m = projection(model, views[1]), projection(model, mixture(views[0], LAM))
        return weigh(vibcreg_written_out(model, z_other, z_m),
                     vibcreg_written_out(model, z_other, z_m[REVERSED]), LAM)

    check_variant(build_method, "vibcreg_unmix", expected_mix)


def supcon_anchor_rows(anchors, anchor_labels, rows, row_labels, temperature):
    """(A,) -log(sum over rows of the anchor's class / sum over all rows) of exp(cos / T)."""
    similarity = torch.exp(F.normalize(anchors, dim=1) @ F.normalize(rows, dim=1).T / temperature)
    same = (anchor_labels[:, None] == row_labels[None, :]).to(similarity.dtype)
    return -torch.log((similarity * same).sum(1) / similarity.sum(1))


def test_supcon_mixture_anchors_against_the_clean_rows_of_both_classes(build_method):
    def expected_mix(model, views):
        y = torch.arange(N) % 4  # two_view_batch's labels
        clean = torch.cat([projection(model, v) for v in views])
        z_m = projection(model, mixture(views[0], LAM))
        # mixture i: its source's class with lam, its partner's class with 1 - lam
        source = supcon_anchor_rows(z_m, y, clean, y.repeat(2), model.temperature)
        partner = supcon_anchor_rows(z_m, y[REVERSED], clean, y.repeat(2), model.temperature)
        return (LAM * source + (1 - LAM) * partner).mean()

    check_variant(build_method, "supcon_unmix", expected_mix)


def test_all4one_mixture_is_its_three_objectives_on_other_and_mixture(build_method):
    def view(model, x):
        """All4One's outputs of images x, from the model's submodules, the support set before the step."""
        z = projection(model, x)
        mz = F.normalize(momentum_projection(model, x), dim=-1)
        neighbours = model.queue[(mz @ model.queue.T).topk(5, dim=1).indices]  # (N, 5, D)
        code = model.sequence_code  # checked on its own in test_newer_methods.py

        def summary(sequence):
            return model.transformer_encoder(sequence + code)[:, 0]

        strange = torch.cat([model.predictor2(z)[:, None], neighbours[:, :4]], dim=1)
        return (z, model.predictor(z), summary(strange), mz, neighbours[:, 0], summary(neighbours))

    def expected_mix(model, views):
        other, mixed = view(model, views[1]), view(model, mixture(views[0], LAM))
        flipped = tuple(t[REVERSED] for t in mixed)
        return weigh(model.all4one_loss(other, mixed)[0], model.all4one_loss(other, flipped)[0], LAM)

    variant, base = check_variant(build_method, "all4one_unmix", expected_mix)
    assert torch.equal(variant.queue, base.queue)  # clean momentum projections only


# ---- their base losses, against the same written-out formulas ------------------------------
def base_step_logs(build_method, name):
    model, _ = build_pair(build_method, name + "_unmix")  # float64, train mode, dropout off
    base = build_method(name, **dict(SMALL[name], knn_eval=False)).double().train()
    base.load_state_dict(model.state_dict())
    if hasattr(base, "transformer_encoder"):
        no_dropout(base)
    before = copy.deepcopy(base)  # the expected values read queues as the step found them
    batch = two_view_batch()
    _, logs = run_step(base, batch)
    return before, batch[1], logs


def test_mocov3_base_loss_is_symmetric_over_the_views(build_method):
    model, views, logs = base_step_logs(build_method, "mocov3")
    with torch.no_grad():
        q = [model.predictor(projection(model, v)) for v in views]
        k = [momentum_projection(model, v) for v in views]
        expected = (mocov3_rows(q[0], k[1], model.temperature).mean()
                    + mocov3_rows(q[1], k[0], model.temperature).mean())
    assert logs["train_contrastive_loss"] == pytest.approx(float(expected), **TOL)


def test_vibcreg_base_loss_is_written_out(build_method):
    model, views, logs = base_step_logs(build_method, "vibcreg")
    with torch.no_grad():
        expected = vibcreg_written_out(model, *(projection(model, v) for v in views))
    assert logs["train_vibcreg_loss"] == pytest.approx(float(expected), **TOL)


def test_supcon_base_loss_takes_every_other_row_of_the_class_as_positive(build_method):
    model, views, logs = base_step_logs(build_method, "supcon")
    y = torch.arange(N) % 4
    with torch.no_grad():
        z = torch.cat([projection(model, v) for v in views])
        rows = []
        for a in range(2 * N):  # each anchor against every row but itself
            others = torch.arange(2 * N) != a
            rows.append(supcon_anchor_rows(z[a:a + 1], y.repeat(2)[a:a + 1], z[others], y.repeat(2)[others],
                                           model.temperature))
    assert logs["train_nce_loss"] == pytest.approx(float(torch.cat(rows).mean()), **TOL)


def test_all4one_base_loss_is_its_three_objectives_written_out(build_method):
    model, views, logs = base_step_logs(build_method, "all4one")
    t = model.temperature
    with torch.no_grad():
        z = [projection(model, v) for v in views]
        mz = [F.normalize(momentum_projection(model, v), dim=-1) for v in views]
        nn5 = [model.queue[(m @ model.queue.T).topk(5, dim=1).indices] for m in mz]

        def summary(sequence):
            return model.transformer_encoder(sequence + model.sequence_code)[:, 0]

        rich = [summary(n) for n in nn5]
        strange = [summary(torch.cat([model.predictor2(zi)[:, None], n[:, :4]], dim=1)) for zi, n in zip(z, nn5)]
        p = [model.predictor(zi) for zi in z]
        nn_loss = (nnclr_loss_func(nn5[0][:, 0], p[1], t) + nnclr_loss_func(nn5[1][:, 0], p[0], t)) / 2
        centroid = (nnclr_loss_func(rich[0], strange[1], 0.1) + nnclr_loss_func(rich[1], strange[0], 0.1)) / 2
        on, off = [], []
        for a, b in ((0, 1), (1, 0)):
            c = F.normalize(mz[a], dim=0).T @ F.normalize(z[b], dim=0)
            on.append(((torch.diag(c) - 1) ** 2).mean())
            off.append(c[~torch.eye(len(c), dtype=torch.bool)].pow(2).mean())
        feature = 10 * (0.5 * (sum(on) / 2).sqrt() + 0.5 * (sum(off) / 2).sqrt())
    assert logs["train_nnclr_loss"] == pytest.approx(float(nn_loss), **TOL)
    assert logs["train_att_nnclr_loss"] == pytest.approx(float(centroid), **TOL)
    assert logs["train_feature_loss"] == pytest.approx(float(feature), **TOL)
    assert logs["train_comb_loss"] == pytest.approx(float(0.5 * (nn_loss + centroid + feature)), **TOL)
