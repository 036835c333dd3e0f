"""End-to-end joint actor-action segmentation (Ji et al. 2018, "End-to-End Joint Semantic
Segmentation of Actors and Actions in Video", ``shared/papers/ji2018-end-to-end.md``): a Mask
R-CNN-style model with decoupled actor and action heads on two-stream (RGB + flow) pyramids
aggregated over time.

Modules: ``backbone`` (ResNet+FPN, 3x1x1 temporal layers), ``transform`` (clip resize/pad),
``heads`` (RoI heads), ``model`` (:func:`build_e2e_model`, ablations), ``loss`` (weighted
multitask loss), ``labels`` (targets, pair classes, zero-shot masking), ``postprocess``
(instances, label maps), ``detection_ap`` (detection mAP, zero-shot AP and r_zs).

Input contract (dataset-agnostic; the training stage's data loader produces it):

- ``images``: (B, T, 3, H, W) float32 RGB in 0..1, or a list of B (T, 3, H_i, W_i) when clips
  differ in size. T is odd; frame T // 2 is the annotated frame, the others its context (a
  loader repeats the first/last frame at clip edges). T = ``model.num_frames`` for temporal
  models; single-frame models accept any odd T and use the centre frame.
- ``flows``: like ``images``, channels (x, y, magnitude) as produced by
  :func:`pipeline.flow.encode.flow_to_xym` (pixels / 20) for the same frames; needed only when
  ``model.uses_flow``.
- ``targets`` (training): a list of B dicts for the centre frames:
  ``boxes`` (N, 4) float32 xyxy in pixels (far corner exclusive), ``actor`` (N,) int64 1..7,
  ``action`` (N,) int64 1..9 or -1 (:data:`pipeline.e2e.labels.IGNORE_ACTION`: the action loss
  skips the instance), ``masks`` (N, H, W) uint8 0/1. N may be 0.

Output (eval), per clip at its input size: ``boxes``, ``actor``, ``actor_score``,
``action_probs`` (N, 9), ``masks`` (N, H, W) probabilities; see
:func:`pipeline.e2e.postprocess.to_instances` and :func:`~pipeline.e2e.postprocess.instances_to_label_map`.
"""

from pipeline.e2e.detection_ap import DetectionAP, actor_pair_ap, zero_shot_ratio
from pipeline.e2e.labels import IGNORE_ACTION, mask_action_labels
from pipeline.e2e.loss import MultitaskLoss
from pipeline.e2e.model import ABLATIONS, ActorActionRCNN, build_e2e_model
from pipeline.e2e.postprocess import instances_to_label_map, to_instances

__all__ = [
    "ABLATIONS", "ActorActionRCNN", "DetectionAP", "IGNORE_ACTION", "MultitaskLoss",
    "actor_pair_ap", "build_e2e_model", "instances_to_label_map", "mask_action_labels",
    "to_instances", "zero_shot_ratio",
]
