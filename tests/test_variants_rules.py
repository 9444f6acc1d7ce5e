"""Rules every Un-Mix variant keeps: one extra online pass, clean queues, clear errors."""
import pytest
import torch

VARIANTS = (
    "barlow_twins_unmix", "byol_unmix", "deepclusterv2_unmix", "dino_unmix", "mocov2_unmix",
    "mocov2plus_unmix", "nnbyol_unmix", "nnclr_unmix", "nnsiam_unmix", "ressl_unmix",
    "simclr_unmix", "simsiam_unmix", "swav_unmix", "vicreg_unmix", "wmse_unmix",
    # the methods of newer solo-learn (MAE has no variant)
    "all4one_unmix", "mocov3_unmix", "supcon_unmix", "vibcreg_unmix",
)
# variants whose target side sees the mixture through the momentum network (docs/unmix.md section 3; All4One
# looks up the mixture's neighbours by its momentum projection)
MOMENTUM_PASS_OVER_MIXTURE = {"byol_unmix", "nnbyol_unmix", "dino_unmix", "all4one_unmix"}


def make_batch(n=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 3, size, size, generator=g) for _ in range(2)]
    return [torch.arange(n), views, torch.arange(n) % 4]


def silence_logging(model):
    """Prepares ``model`` for ``training_step`` outside a Trainer."""
    model.log = lambda *a, **k: None
    model.log_dict = lambda *a, **k: None
    if hasattr(model, "kmeans_iters"):  # DeepCluster v2 builds its memory bank in on_train_start
        heads, dim = len(model.num_prototypes), model.proj_output_dim
        model.assignments = torch.arange(heads * 8).view(heads, 8) % 4
        model.local_memory_index = torch.zeros(8, dtype=torch.long)
        model.local_memory_embeddings = torch.zeros(2, 8, dim)
    if hasattr(model, "sk_iters"):  # SwAV builds Sinkhorn-Knopp and its queue in on_train_start
        from solo.utils.sinkhorn_knopp import SinkhornKnopp

        model.sk = SinkhornKnopp(model.sk_iters, model.sk_epsilon, 1)
        model.register_buffer("queue", torch.zeros(2, model.queue_size, model.proj_output_dim))


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, inputs, out: calls.append(inputs[0].shape[0]))
    return calls


@pytest.mark.parametrize("name", VARIANTS)
def test_one_extra_online_encoder_pass_per_step(name, build_method):
    variant = build_method(name)
    base = build_method(name[: -len("_unmix")])
    batch = make_batch()
    counts = {}
    for label, model in (("variant", variant), ("base", base)):
        silence_logging(model)
        online = count_calls(model.encoder)
        momentum = count_calls(model.momentum_encoder) if hasattr(model, "momentum_encoder") else []
        model.training_step(batch, 0)
        counts[label] = (len(online), len(momentum))

    assert counts["base"][0] == 2  # two clean views
    assert counts["variant"][0] == counts["base"][0] + 1  # the mixture, once: flips are free
    extra_momentum = 1 if name in MOMENTUM_PASS_OVER_MIXTURE else 0
    assert counts["variant"][1] == counts["base"][1] + extra_momentum


def test_online_target_side_skips_the_momentum_pass(build_method):
    model = build_method("byol_unmix", unmix_target_side="online")
    silence_logging(model)
    momentum = count_calls(model.momentum_encoder)
    model.training_step(make_batch(), 0)
    assert len(momentum) == 2


def clean_keys(model, view_images, projector_name):
    """What the base step enqueues for a clean view (momentum path, normalised)."""
    with torch.no_grad():
        encoder = model.momentum_encoder if "momentum" in projector_name else model.encoder
        return torch.nn.functional.normalize(
            getattr(model, projector_name)(encoder(view_images)), dim=-1)


# (variant, projector of what is enqueued, view enqueued, all stored rows (K, D))
QUEUES = [
    ("mocov2_unmix", "momentum_projector", 1, lambda m: m.queue.T),
    ("mocov2plus_unmix", "momentum_projector", 1, lambda m: m.queue[1].T),
    ("ressl_unmix", "momentum_projector", 1, lambda m: m.queue),
    ("nnclr_unmix", "projector", 0, lambda m: m.queue),
    ("nnsiam_unmix", "projector", 0, lambda m: m.queue),
    ("nnbyol_unmix", "momentum_projector", 0, lambda m: m.queue),
    ("all4one_unmix", "momentum_projector", 0, lambda m: m.queue),
]


@pytest.mark.parametrize("name, projector_name, view, stored_rows", QUEUES)
def test_queues_and_support_sets_receive_clean_embeddings_only(name, projector_name, view,
                                                                stored_rows, build_method):
    model = build_method(name, unmix_lam=0.5, unmix_prob=1.0)
    silence_logging(model)
    batch = make_batch()
    n = batch[1][0].shape[0]
    mixture = 0.5 * batch[1][0] + 0.5 * batch[1][0].flip(0)

    model.training_step(batch, 0)

    # weights are unchanged by training_step alone (no optimizer step, no EMA update)
    rows = stored_rows(model)
    torch.testing.assert_close(rows[:n], clean_keys(model, batch[1][view], projector_name),
                               atol=1e-5, rtol=1e-4)
    similarity = clean_keys(model, mixture, projector_name) @ rows.T
    assert similarity.max() < 0.9999, "a mixed embedding reached the queue"


def test_swav_queue_receives_clean_embeddings_only(build_method):
    model = build_method("swav_unmix", queue_size=16, epoch_queue_starts=0,
                         unmix_lam=0.5, unmix_prob=1.0)
    silence_logging(model)
    batch = make_batch()
    model.training_step(batch, 0)
    with torch.no_grad():
        z0 = torch.nn.functional.normalize(model.projector(model.encoder(batch[1][0])))
    torch.testing.assert_close(model.queue[0, :8], z0, atol=1e-5, rtol=1e-4)


def test_mixed_images_never_reach_the_online_classifier_or_knn(build_method):
    model = build_method("simclr_unmix")
    silence_logging(model)
    classified = count_calls(model.classifier)
    model.training_step(make_batch(), 0)
    assert len(classified) == 2  # the two clean views only
    assert sum(f.shape[0] for f in model.knn.train_features) == 16


@pytest.mark.parametrize("overrides, argument", [
    ({"unmix_alpha": 0.0}, "alpha"),
    ({"unmix_alpha": -1.0}, "alpha"),
    ({"unmix_prob": 1.5}, "prob"),
    ({"unmix_prob": -0.1}, "prob"),
    ({"unmix_lam": 1.2}, "lam"),
    ({"unmix_view": 2}, "unmix_view"),
    ({"unmix_target_side": "target"}, "unmix_target_side"),
    ({"unmix_per_sample": True}, "unmix_per_sample"),  # simclr's NT-Xent is not per-sample
])
def test_bad_settings_fail_at_construction_with_one_line(overrides, argument, build_method):
    with pytest.raises(ValueError, match=argument) as err:
        build_method("simclr_unmix", **overrides)
    assert "\n" not in str(err.value)


def test_ressl_rejects_mixing_view_one(build_method):
    with pytest.raises(ValueError, match=r"unmix_view must be one of \[0\]"):
        build_method("ressl_unmix", unmix_view=1)


def test_batch_of_one_fails_on_the_first_step_with_one_line(build_method):
    model = build_method("simclr_unmix")
    silence_logging(model)
    with pytest.raises(ValueError, match="batch of at least 2") as err:
        model.training_step(make_batch(n=1), 0)
    assert "\n" not in str(err.value)


def test_draws_depend_on_seed_rank_and_step_only(build_method):
    a = build_method("simclr_unmix", unmix_seed=7)
    b = build_method("simclr_unmix", unmix_seed=7)
    c = build_method("simclr_unmix", unmix_seed=8)
    draw = lambda m: torch.rand(4, generator=m.unmix_generator(0))  # noqa: E731
    assert torch.equal(draw(a), draw(b))
    assert not torch.equal(draw(a), draw(c))


def test_solo_argparse_exposes_the_unmix_options():
    import argparse

    from solo.methods import METHODS

    parser = argparse.ArgumentParser()
    METHODS["swav_unmix"].add_model_specific_args(parser)
    args = parser.parse_args(["--optimizer", "sgd", "--unmix_alpha", "0.5", "--unmix_view", "1",
                              "--unmix_target_side", "online", "--num_prototypes", "10"])
    assert (args.unmix_alpha, args.unmix_view, args.unmix_target_side) == (0.5, 1, "online")
    assert args.num_prototypes == 10 and args.unmix_prob == 0.5


@pytest.mark.parametrize("name", VARIANTS)
def test_the_mixture_learns(name, build_method):
    """The mixed view's features get a gradient from the step's loss (not only a target)."""
    model = build_method(name, unmix_lam=0.3, unmix_prob=1.0)
    silence_logging(model)
    mixed_feats = []

    def keep_first_call(module, inputs, output):
        if not mixed_feats:  # forward_mixed runs before the base step: call 1 is the mixture
            output.retain_grad()
            mixed_feats.append(output)

    model.encoder.register_forward_hook(keep_first_call)
    loss = model.training_step(make_batch(), 0)
    loss.backward()

    grad = mixed_feats[0].grad
    assert grad is not None and grad.abs().sum() > 0
