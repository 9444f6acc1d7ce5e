"""Un-Mix label assignment: the mixture loss each method family adds to its base loss.

Follows section 2 of docs/unmix.md (Un-Mix, Shen et al., AAAI 2022). Every function
returns only the mixture part, each of its terms with weight 1; the caller adds it to
the method's unchanged loss ``L_base``, scaled by what one term of ``L_base`` weighs
(1/2 where the framework averages two view pairs), so base and mixture stand 1:1.

Conventions:

- The mixed batch is ``M = lam * X + (1 - lam) * flip(X)``, where ``flip`` reverses
  dim 0: mixture ``i`` holds sample ``i`` with weight ``lam_i`` and sample ``N-1-i``
  with weight ``1 - lam_i`` (with odd N the middle sample is its own partner).
- ``other`` are the outputs on the clean view that was not mixed, already computed
  for ``L_base``; ``mixed`` are the outputs on ``M``. The outputs on ``flip(M)`` are
  ``t.flip(0)`` of the outputs on ``M``: nothing here runs a network, and the caller
  never needs a second forward pass.
- ``lam`` is a python float (or a 0-dim tensor), one value per step as in the paper,
  or a tensor of shape (N,), one value per mixture (beyond the paper). Row ``i`` of
  a flipped term pairs clean sample ``i`` with mixture ``N-1-i``, which holds sample
  ``i`` with weight ``1 - lam[N-1-i]``, so that row is weighted by
  ``1 - lam.flip(0)[i]``.
- A per-sample ``lam`` needs one loss value per row: a loss callable then returns
  shape (N,), whose mean is the loss. With a scalar ``lam`` a loss callable may
  return a scalar or per-row values (they are averaged).
- Nothing is detached here: a stop-gradient on targets is the caller's job (or the
  method's own loss function's, as solo-learn's ``byol_loss_func`` does).
- Where the loss varies with the method, it is passed as a callable: solo-learn's
  ``simclr_loss_func``, ``barlow_loss_func``, ``byol_loss_func``... adapted with a
  lambda or ``functools.partial`` to take ``(other, mixed)``.

Example (BYOL, view 0 mixed, per-step lam)::

    mix_loss = predictor_target_mix_loss(
        byol_loss_func, p_other=p[1], z_other=z_momentum[1],
        p_mixed=p_mix, z_mixed=z_momentum_mix, lam=lam,
    )
    loss = base_loss + mix_loss
"""

from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

Outputs = Union[Tensor, Tuple[Tensor, ...]]
Lam = Union[float, Tensor]
PairLoss = Callable[[Outputs, Outputs], Tensor]

TARGET_SIDES = ("both", "online")


def soft_cross_entropy(scores: Tensor, codes: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of soft targets, row by row: ``-sum_k codes_k log softmax(scores / T)_k``.

    Args:
        scores: (N, K) prototype scores or student logits.
        codes: (N, K) target probabilities (Sinkhorn codes or teacher softmax).
        temperature: softmax temperature T applied to ``scores``.

    Returns:
        (N,) one loss value per row.
    """
    return -(codes * F.log_softmax(scores / temperature, dim=1)).sum(dim=1)


def reversed_pair_loss(loss_fn: PairLoss, other: Outputs, mixed: Outputs, lam: Lam) -> Tensor:
    """General rule: ``lam * l(other, mixed) + (1 - lam) * l(other, flip(mixed))``.

    Used for W-MSE, Barlow Twins, VICReg, ReSSL and the in-batch contrastive family
    (SimCLR NT-Xent, NNCLR), with the method's own loss on the pair (other, mixed).

    Args:
        loss_fn: ``l(other, mixed)`` matching row i of ``other`` with row i of
            ``mixed``; returns a scalar, or (N,) per-row values (required when
            ``lam`` is per-sample).
        other: (N, D) outputs on the clean view, or a tuple of (N, ...) tensors.
        mixed: outputs on ``M`` with the same structure and shapes as ``other``;
            each element of a tuple is flipped.
        lam: float, or (N,) per-sample weights.

    Returns:
        Scalar mixture loss.

    Raises:
        ValueError: ``mixed`` does not match ``other``, or ``lam`` is per-sample and
            ``loss_fn`` does not return one value per row.
    """
    _check_pair(other, mixed)
    return _weighted_mean(loss_fn(other, mixed), loss_fn(other, _flip(mixed)), lam)


def moco_mix_loss(
    q_mixed: Tensor, keys: Tensor, queue: Tensor, temperature: float, lam: Lam
) -> Tensor:
    """MoCo (v1, v2, v2+): two separate softmaxes per mixture, each with the queue as negatives.

    ``lam * CE([q_m . k, q_m . queue] / T, 0)
    + (1 - lam) * CE([flip(q_m) . k, flip(q_m) . queue] / T, 0)``, label 0 being the positive.

    Asymmetric MoCo is one call with the clean keys of the other view. Symmetric MoCo
    is two calls, one per clean key set (each with its own queue slice), summed by
    the caller. Only clean keys enter the queue; that is the caller's job too.

    Args:
        q_mixed: (N, D) normalised queries of ``M`` from the query encoder.
        keys: (N, D) normalised momentum-encoder keys of a clean view, already computed.
        queue: (D, K) negatives; solo-learn stores (2, D, K), one slice per view:
            pass the slice that the base loss uses with these ``keys``.
        temperature: the method's temperature T.
        lam: float, or (N,) per-sample weights.

    Returns:
        Scalar mixture loss.
    """
    _check_same_shape("q_mixed", q_mixed, "keys", keys)
    dim = q_mixed.shape[1]
    if queue.dim() != 2 or queue.shape[0] != dim:
        raise ValueError(
            f"queue must have shape (D={dim}, K), got {tuple(queue.shape)}; "
            "pass one view's slice of a (2, D, K) queue"
        )
    # One product with the queue serves both terms:
    # row i of flip(q) @ queue is row N-1-i of q @ queue.
    negatives = q_mixed @ queue
    direct = _moco_rows(q_mixed, keys, negatives, temperature)
    flipped = _moco_rows(q_mixed.flip(0), keys, negatives.flip(0), temperature)
    return _weighted_mean(direct, flipped, lam)


def class_mix_loss(
    anchor_loss: Callable[[Tensor, Tensor], Tensor], mixed: Tensor, labels: Tensor, lam: Lam
) -> Tensor:
    """SupCon (labels known): the mixture is an anchor whose positives are its two sources' classes.

    ``lam * s(mixed, labels) + (1 - lam) * s(flip(mixed), labels)``: mixture i holds sample i
    (class ``labels[i]``) with weight lam and sample N-1-i with weight 1 - lam, so its
    positives are the clean rows of class ``labels[i]`` (weight lam) and of class
    ``labels[N-1-i]`` (weight 1 - lam). Written with the flip on the mixture, row i of the
    second term pairs mixture N-1-i with class ``labels[i]``, as the general rule pairs it.

    Args:
        anchor_loss: ``s(anchors, anchor_labels)`` -> (N,) the method's supervised loss of
            each anchor against the clean rows (which the callable holds); mixed rows are
            anchors only, never candidates.
        mixed: (N, D) outputs on ``M``.
        labels: (N,) classes of the clean samples, in batch order.
        lam: float, or (N,) per-sample weights.

    Returns:
        Scalar mixture loss.
    """
    if labels.shape != mixed.shape[:1]:
        raise ValueError(f"labels must have shape ({len(mixed)},), one class per mixture, got {tuple(labels.shape)}")
    return _weighted_mean(anchor_loss(mixed, labels), anchor_loss(mixed.flip(0), labels), lam)


def predictor_target_mix_loss(
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    p_other: Tensor,
    z_other: Tensor,
    p_mixed: Tensor,
    z_mixed: Optional[Tensor],
    lam: Lam,
    target_side: str = "both",
) -> Tensor:
    """BYOL, SimSiam, NNBYOL, NNSiam: predictor of one side against the target of the other.

    With ``target_side="both"``, ``l(other, mixed) = loss_fn(p_mixed, z_other) +
    loss_fn(p_other, z_mixed)``, so the mixture also goes through the target
    network; with ``"online"``, ``l = loss_fn(p_mixed, z_other)`` only. Then the
    general rule: ``lam * l(other, mixed) + (1 - lam) * l(other, flip(mixed))``.

    Args:
        loss_fn: ``loss_fn(p, z)`` with p (N, D) predictions and z (N, D) targets;
            a scalar, or (N,) per-row values (required when ``lam`` is per-sample).
        p_other: (N, D) predictor outputs on the clean view.
        z_other: (N, D) target outputs (momentum or stop-gradient) on the clean view.
        p_mixed: (N, D) predictor outputs on ``M``.
        z_mixed: (N, D) target network outputs on ``M``; ignored and may be None
            with ``target_side="online"``.
        lam: float, or (N,) per-sample weights.
        target_side: "both" (default, as the paper) or "online".

    Returns:
        Scalar mixture loss.
    """
    if target_side not in TARGET_SIDES:
        raise ValueError(f"target_side must be one of {TARGET_SIDES}, got {target_side!r}")
    _check_same_shape("p_mixed", p_mixed, "p_other", p_other)
    if target_side == "online":
        return reversed_pair_loss(lambda z, p: loss_fn(p, z), z_other, p_mixed, lam)
    if z_mixed is None:
        raise ValueError(
            "z_mixed is None but target_side='both' needs the target network's "
            "output on M; pass it or use target_side='online'"
        )
    _check_same_shape("z_mixed", z_mixed, "z_other", z_other)
    return reversed_pair_loss(_crossed(loss_fn), (p_other, z_other), (p_mixed, z_mixed), lam)


def codes_mix_loss(
    scores_mixed: Tensor,
    codes_mixed: Tensor,
    scores_other: Tensor,
    codes_other: Tensor,
    temperature: float,
    lam: Lam,
) -> Tensor:
    """SwAV, DeepCluster v2, DINO: scores of one side against the codes of the other, both ways.

    With ``l(z, q) = -sum_k q_k log softmax(z / T)_k`` averaged over rows:
    ``lam * [l(z_m, q_s) + l(z_s, q_m)] + (1 - lam) * [l(flip(z_m), q_s) + l(z_s, flip(q_m))]``.

    Args:
        scores_mixed: (N, K) prototype scores (student logits for DINO) on ``M``.
        codes_mixed: (N, K) probabilities computed from the scores of ``M``
            (Sinkhorn codes, or the teacher's softmax for DINO).
        scores_other: (N, K) scores on the clean view.
        codes_other: (N, K) probabilities on the clean view.
        temperature: softmax temperature T of the scores (student temperature for DINO).
        lam: float, or (N,) per-sample weights.

    Returns:
        Scalar mixture loss.
    """
    _check_same_shape("scores_mixed", scores_mixed, "scores_other", scores_other)
    _check_same_shape("codes_mixed", codes_mixed, "codes_other", codes_other)
    loss_fn = _crossed(lambda z, q: soft_cross_entropy(z, q, temperature))
    return reversed_pair_loss(
        loss_fn, (scores_other, codes_other), (scores_mixed, codes_mixed), lam
    )


def _crossed(loss_fn: Callable[[Tensor, Tensor], Tensor]) -> PairLoss:
    """Pair loss on two-headed outputs (a, b).

    ``pair_loss((a_other, b_other), (a_mixed, b_mixed)) = loss_fn(a_mixed, b_other)
    + loss_fn(a_other, b_mixed)``: each side's first head against the other side's second.
    """

    def pair_loss(other: Outputs, mixed: Outputs) -> Tensor:
        (a_other, b_other), (a_mixed, b_mixed) = other, mixed
        return loss_fn(a_mixed, b_other) + loss_fn(a_other, b_mixed)

    return pair_loss


def _moco_rows(queries: Tensor, keys: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """(N,) InfoNCE per row; queries, keys (N, D), negatives (N, K) = queries @ queue."""
    positives = (queries * keys).sum(dim=1, keepdim=True)
    logits = torch.cat([positives, negatives], dim=1) / temperature
    # the positive is column 0 of every row
    labels = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels, reduction="none")


def _weighted_mean(direct: Tensor, flipped: Tensor, lam: Lam) -> Tensor:
    """``lam`` on the direct term, ``1 - lam`` of the partner mixture on the flipped term, averaged.

    direct, flipped: scalars or (N,) per-row values; returns a scalar.
    """
    if not (isinstance(lam, Tensor) and lam.dim() > 0):
        return (lam * direct + (1 - lam) * flipped).mean()
    if direct.dim() != 1 or flipped.shape != direct.shape:
        raise ValueError(
            "per-sample lam needs a loss that returns one value per row, got shape "
            f"{tuple(direct.shape)}; pass a per-row loss or a float lam"
        )
    if lam.shape != direct.shape:
        raise ValueError(
            f"lam must be a float or have shape ({len(direct)},), one value per row, "
            f"got {tuple(lam.shape)}"
        )
    # Row i of the flipped term is mixture N-1-i, which holds clean sample i
    # with weight 1 - lam[N-1-i].
    return (lam * direct + (1 - lam.flip(0)) * flipped).mean()


def _flip(outputs: Outputs) -> Outputs:
    """Outputs on flip(M) from outputs on M: reverse dim 0 of a tensor or of each tuple element."""
    if isinstance(outputs, Tensor):
        return outputs.flip(0)
    return tuple(t.flip(0) for t in outputs)


def _check_pair(other: Outputs, mixed: Outputs) -> None:
    if isinstance(other, Tensor) and isinstance(mixed, Tensor):
        _check_same_shape("mixed", mixed, "other", other)
        return
    if isinstance(other, Tensor) or isinstance(mixed, Tensor) or len(other) != len(mixed):
        raise ValueError(
            "mixed must have the structure of other: both tensors or tuples of the same length"
        )
    for i, (o, m) in enumerate(zip(other, mixed)):
        _check_same_shape(f"mixed[{i}]", m, f"other[{i}]", o)


def _check_same_shape(name: str, tensor: Tensor, ref_name: str, ref: Tensor) -> None:
    if tensor.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but {ref_name} has "
            f"{tuple(ref.shape)}; they must match"
        )
