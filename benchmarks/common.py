"""What the benchmarks share: the machine, methods built outside Lightning, interleaved timing.

Every figure a benchmark reports is a ratio of two things measured in the same
process, interleaved (a, b, b, a, a, b, ...), and summarised by the median over rounds
of the per-round ratio: a shared or throttled machine slows both sides of a
round alike, so the ratio survives load that absolute times do not.

The clock (:func:`clock`): on CPU, the process's CPU time (user + system), so the
time a step spends waiting for a core that another job holds is not counted as its
cost; with one torch thread (the default) that is the work the step does. On CUDA,
wall time between synchronisations.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

# the memory measurement starts torch's profiler, whose tracing library logs
# "ERROR: gpuGetDeviceCount failed" on a machine without a GPU: not an error of ours
os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

import unmix_ext.methods  # noqa: F401  (patches solo-learn and registers the variants before solo is used)
from solo.methods import METHODS  # noqa: E402
from unmix_ext.methods import UNMIX_SUFFIX  # noqa: E402
from unmix_ext.runner.solo_kwargs import method_kwargs  # noqa: E402

#: classes of the online linear classifier every solo method trains alongside
NUM_CLASSES = 10
#: negatives kept by queue methods: solo-learn's CIFAR setting (its default, 65536, is ImageNet's)
CIFAR_QUEUE = 4096
QUEUE_METHODS = ("all4one", "mocov2", "mocov2plus", "nnbyol", "nnclr", "nnsiam", "ressl")
#: every base method that has an Un-Mix variant (solo-learn 1.0.2's 14, mocov2 and the four of newer solo-learn but MAE)
PAIRS = tuple(sorted(name[: -len(UNMIX_SUFFIX)] for name in METHODS if name.endswith(UNMIX_SUFFIX)))
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Options:
    """Sizes and numerics shared by the step and mixing benchmarks.

    Attributes:
        device: "cpu" or "cuda" (or "cuda:<index>").
        batch: images per view, N.
        image: side of the square views in pixels (ResNet-18 with the CIFAR stem).
        repeats: timed rounds; each reported ratio is a median over them.
        warmup: untimed rounds first (allocator, cuDNN autotuning, lazy optimizer state).
        amp: "none", "bf16" or "fp16": autocast dtype of the training step.
        channels_last: model and views in channels_last memory format.
        threads: torch's CPU threads; 0 keeps torch's default. One by default: on a
            small machine shared with other jobs, OpenMP threads that wait for a
            preempted sibling make a step 2-5x slower and far noisier.
    """

    device: str = "cpu"
    batch: int = 32
    image: int = 32
    repeats: int = 3
    warmup: int = 1
    amp: str = "none"
    channels_last: bool = False
    threads: int = 1

    def __post_init__(self):
        for name in ("batch", "image", "repeats"):
            if getattr(self, name) < (2 if name == "batch" else 1):
                raise ValueError(f"{name} must be >= {2 if name == 'batch' else 1}, got {getattr(self, name)}")
        for name in ("warmup", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {list(AMP_DTYPES)}, got {self.amp!r}")

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        return AMP_DTYPES[self.amp]


def add_options(parser: argparse.ArgumentParser, defaults: Options = Options()) -> None:
    """Adds ``--device --batch --image --repeats --warmup --amp --channels-last --threads``."""
    parser.add_argument("--device", default=defaults.device, help="cpu or cuda (default %(default)s)")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="images per view (%(default)s)")
    parser.add_argument("--image", type=int, default=defaults.image, help="view side in pixels (%(default)s)")
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="timed rounds (%(default)s)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed rounds (%(default)s)")
    parser.add_argument("--amp", choices=list(AMP_DTYPES), default=defaults.amp, help="autocast dtype")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and views")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="torch CPU threads, 0: torch's default (%(default)s)")


def options_from(args: argparse.Namespace) -> Options:
    return Options(device=args.device, batch=args.batch, image=args.image, repeats=args.repeats,
                   warmup=args.warmup, amp=args.amp, channels_last=args.channels_last, threads=args.threads)


def prepare(options: Options) -> None:
    """Sets torch's CPU threads and silences the chatter of Lightning and solo-learn."""
    if options.threads:
        torch.set_num_threads(options.threads)
    # fixed shapes: let cuDNN pick its fastest kernels (the warm-up rounds absorb the search)
    torch.backends.cudnn.benchmark = True
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ---- the machine ------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device: str) -> Dict[str, str]:
    """What the numbers were measured on: CPU, cores, load, torch, the device."""
    description = {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f}",
        "torch": torch.__version__,
        "device": device,
    }
    if torch.device(device).type == "cuda":
        description["device"] = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return description


# ---- timing -----------------------------------------------------------------------------------
def synchronize(device: str) -> None:
    """Waits for the device's queued work, so a timer brackets what ran (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def clock(device: str) -> Callable[[], float]:
    """Seconds: CPU time of this process on a CPU device, wall time on a GPU (see the module)."""
    return time.perf_counter if torch.device(device).type == "cuda" else time.process_time


def interleaved(candidates: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int, device: str,
                calls: Union[int, Mapping[str, int]] = 1) -> Dict[str, List[float]]:
    """Times each candidate once a round, in turn, for ``repeats`` rounds after ``warmup`` rounds.

    Rounds alternate the order (a, b, then b, a, ...), so that a steady drift in the
    machine's load weighs on both candidates alike.

    Args:
        candidates: label -> function to time (called without arguments).
        calls: calls a timing makes of a candidate (one number, or one per label):
            many for a function too short to time alone.

    Returns:
        label -> seconds per call by :func:`clock`, one value per round (``repeats`` values).
    """
    per_label = calls if isinstance(calls, Mapping) else {label: calls for label in candidates}
    now = clock(device)
    for _ in range(warmup):
        for label, fn in candidates.items():
            for _ in range(per_label[label]):
                fn()
    seconds: Dict[str, List[float]] = {label: [] for label in candidates}
    for round_ in range(repeats):
        # every other round runs in reverse (a, b, b, a, ...): a drift in load then cancels
        for label, fn in list(candidates.items())[:: 1 if round_ % 2 == 0 else -1]:
            synchronize(device)
            start = now()
            for _ in range(per_label[label]):
                fn()
            synchronize(device)
            seconds[label].append((now() - start) / per_label[label])
    return seconds


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of numerator[i] / denominator[i]."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


# ---- reporting --------------------------------------------------------------------------------
def aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    """One line of a text table: the first cell left-aligned, the others right-aligned."""
    return "  ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths)))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """A markdown table: a header, a rule (numbers right-aligned) and one line per row."""
    rule = ["---"] + ["---:"] * (len(columns) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in (columns, rule, *rows)]


# ---- methods outside Lightning ----------------------------------------------------------------
def base_name(name: str) -> str:
    """``simclr_unmix`` -> ``simclr``; a base method's name is returned as is."""
    return name[: -len(UNMIX_SUFFIX)] if name.endswith(UNMIX_SUFFIX) else name


def fitted_to_batch(method: str, batch: int) -> Dict[str, Any]:
    """solo-learn defaults that assume another batch size, adapted to ``batch``.

    Queues hold CIFAR_QUEUE negatives rounded down to a multiple of the batch (solo
    enqueues whole batches); W-MSE whitens the whole batch at once, which needs fewer
    dimensions than rows for its Cholesky factor.
    """
    if method in QUEUE_METHODS:
        return {"queue_size": max(batch, CIFAR_QUEUE // batch * batch)}
    if method == "wmse":
        return {"whitening_size": batch, "proj_output_dim": min(128, batch // 2)}
    return {}


def build_method(name: str, options: Options, seed: int = 0) -> torch.nn.Module:
    """``solo.methods.METHODS[name]`` with solo's defaults, ready for ``training_step`` on a batch.

    ResNet-18 with the CIFAR stem, no kNN bank (it grows every step), logging switched
    off, and the state ``on_train_start`` would build (SwAV's Sinkhorn-Knopp and queue,
    DeepCluster v2's memory bank and k-means assignments of the batch's images).
    """
    cls = METHODS[name]
    kwargs = method_kwargs(cls, num_classes=NUM_CLASSES, cifar=True, max_epochs=1, batch_size=options.batch,
                           knn_eval=False, **fitted_to_batch(base_name(name), options.batch))
    torch.manual_seed(seed)
    model = cls(**kwargs)
    model.log = lambda *args, **kwargs: None
    model.log_dict = lambda *args, **kwargs: None
    model.to(options.device, memory_format=options.memory_format).train()
    _start_training(model, options.batch, torch.device(options.device))
    return model


def _start_training(model: torch.nn.Module, batch: int, device: torch.device) -> None:
    if hasattr(model, "kmeans_iters"):  # DeepCluster v2: every image of the batch has k-means targets
        model.assignments = torch.stack([torch.randint(k, (batch,)) for k in model.num_prototypes]).to(device)
        model.local_memory_index = torch.zeros(batch, dtype=torch.long, device=device)
        model.local_memory_embeddings = torch.zeros(model.num_large_crops, batch, model.proj_output_dim,
                                                    device=device)
    if hasattr(model, "sk_iters"):  # SwAV
        from solo.utils.sinkhorn_knopp import SinkhornKnopp

        model.sk = SinkhornKnopp(model.sk_iters, model.sk_epsilon, 1)
        if model.queue_size > 0:
            model.queue = torch.zeros(2, model.queue_size, model.proj_output_dim, device=device)


def make_batch(options: Options, seed: int = 0) -> List[Any]:
    """``[indexes (N,), [view0, view1] each (N, 3, image, image), targets (N,)]`` on the device."""
    generator = torch.Generator().manual_seed(seed)
    n = options.batch
    views = [torch.randn(n, 3, options.image, options.image, generator=generator)
             .to(options.device).contiguous(memory_format=options.memory_format) for _ in range(2)]
    device = torch.device(options.device)
    return [torch.arange(n, device=device), views, (torch.arange(n) % NUM_CLASSES).to(device)]
