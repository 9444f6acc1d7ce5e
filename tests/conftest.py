"""Shared fixtures: tiny solo-learn methods and a two-step Lightning fit on CPU.

Test files cannot import each other (pytest runs with --import-mode=importlib, so
solo-learn's stray site-packages ``tests`` package is never picked up); what
several files need lives here as fixtures.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import unmix_ext.methods  # noqa: F401  (applies the solo-learn patches before any test imports solo)

# Sizes that make every method build and train in seconds on a CPU: one batch per
# epoch, so "two optimizer steps" is two epochs (DeepCluster v2 needs an epoch to
# fill its memory bank before k-means gives it targets).
NUM_CLASSES = 4
BATCH = 8
IMAGE = 32

# Method settings that shrink solo-learn's defaults to a batch of 8.
TINY_METHOD_KWARGS = {
    "deepclusterv2": {"num_prototypes": [4, 4]},
    "wmse": {"whitening_size": BATCH, "proj_output_dim": 4},
    "swav": {"queue_size": 0},
    "mocov2plus": {"queue_size": 32},
    "mocov2": {"queue_size": 32},
    "nnclr": {"queue_size": 32},
    "nnbyol": {"queue_size": 32},
    "nnsiam": {"queue_size": 32},
    "ressl": {"queue_size": 32},
    # the five methods of newer solo-learn: heads of solo-learn main's CIFAR widths / 32
    "mocov3": {"proj_hidden_dim": 128, "pred_hidden_dim": 128, "proj_output_dim": 32},
    "vibcreg": {"proj_hidden_dim": 64, "proj_output_dim": 64, "iternorm": True},
    "supcon": {"proj_hidden_dim": 64, "proj_output_dim": 32},
    "all4one": {"proj_hidden_dim": 64, "pred_hidden_dim": 128, "proj_output_dim": 32, "queue_size": 32},
    "mae": {"encoder": "timm/vit_tiny_patch16_224", "decoder_embed_dim": 32, "decoder_depth": 1,
            "decoder_num_heads": 4, "norm_pix_loss": True,
            "backbone_args": {"img_size": IMAGE, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4}},
}


def pytest_configure(config):
    # the models here are tiny: one thread beats two fighting over small kernels, and
    # subprocesses started by tests inherit the setting
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


class TwoViewImages(Dataset):
    """(index, [view0, view1, small crops...], label) with views drawn from a fixed seed per index.

    Large views are IMAGE px, the ``num_small`` small crops IMAGE / 2 px (multi-crop).
    """

    def __init__(self, size: int = BATCH, num_views: int = 2, num_small: int = 0):
        self.size, self.num_views, self.num_small = size, num_views, num_small

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        sizes = [IMAGE] * self.num_views + [IMAGE // 2] * self.num_small
        views = [torch.randn(3, px, px, generator=g) for px in sizes]
        return i, views, i % NUM_CLASSES


class LabelledImages(Dataset):
    def __init__(self, size: int = BATCH):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1000 + i)
        return torch.randn(3, IMAGE, IMAGE, generator=g), i % NUM_CLASSES


@pytest.fixture
def build_method():
    """``build_method(name, **overrides)``: a tiny method from ``solo.methods.METHODS``."""
    from solo.methods import METHODS

    from unmix_ext.runner.solo_kwargs import method_kwargs

    def build(name: str, **overrides):
        cls = METHODS[name]
        base = name[: -len("_unmix")] if name.endswith("_unmix") else name
        kwargs = method_kwargs(
            cls, num_classes=NUM_CLASSES, cifar=True, max_epochs=2, batch_size=BATCH,
            lars=True, exclude_bias_n_norm=True, scheduler="warmup_cosine", warmup_epochs=1,
            knn_eval=True, knn_k=3, lr=0.05,
        )
        kwargs.update(TINY_METHOD_KWARGS.get(base, {}))
        kwargs.update(overrides)
        torch.manual_seed(0)
        return cls(**kwargs)

    return build


class LossRecorder:
    """Lightning callback keeping every training step's loss."""

    def __init__(self):
        import pytorch_lightning as pl

        recorder = self

        class _Callback(pl.Callback):
            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                recorder.losses.append(float(loss.detach()))

        self.losses: list[float] = []
        self.callback = _Callback()


@pytest.fixture
def fit_two_steps():
    """``fit_two_steps(model) -> losses``: two optimizer steps (two 1-batch epochs) on CPU."""
    import pytorch_lightning as pl

    def fit(model, num_views: int = 2, max_epochs: int = 2, num_small: int = 0):
        recorder = LossRecorder()
        trainer = pl.Trainer(
            max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, callbacks=[recorder.callback], deterministic=False,
        )
        trainer.fit(
            model,
            DataLoader(TwoViewImages(num_views=num_views, num_small=num_small), batch_size=BATCH),
            DataLoader(LabelledImages(), batch_size=BATCH),
        )
        return recorder.losses, trainer

    return fit


@pytest.fixture
def labelled_loader():
    return DataLoader(LabelledImages(), batch_size=BATCH)


class _CreatesFile:
    """Unpickled in full, it calls ``open(path, "w")``: a file appears where a checkpoint should hold only data."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class HostileCheckpoint:
    """Writes hostile checkpoints: real ``torch.save`` archives in Lightning's layout whose pickle creates ``victim``.

    Attributes:
        victim: the file that exists only if such a checkpoint was unpickled in full.
        refusal: what the one-line error says of it, before the command's advice.
    """

    refusal = ("cannot be read safely: it refers to io.open, which no solo-learn or unmix-ext checkpoint holds, "
               "and loading it could run code; nothing of it was loaded; ")

    def __init__(self, victim: Path) -> None:
        self.victim = victim

    def payload(self) -> object:
        """The object whose unpickling creates ``victim``."""
        return _CreatesFile(self.victim)

    def write(self, path: Path) -> Path:
        # hyper_parameters: where Lightning keeps whatever objects a module was built with
        torch.save({"epoch": 0, "global_step": 1, "state_dict": {}, "hyper_parameters": self.payload()}, path)
        return path


@pytest.fixture
def hostile_checkpoint(tmp_path):
    return HostileCheckpoint(tmp_path / "created-by-unpickling")
