"""The end-to-end joint actor-action model of Ji et al. 2018 (sections 3.1-3.3), and its ablations.

Data flow for a batch of B clips of T frames (centre = annotated frame, index T // 2)::

    RGB (B,T,3,H,W) --appearance ResNet+FPN--> (B,T,C,h,w) per level --+--> centre frame
                                                                        |    |-> RPN -> RoIs
                                                                        |    '-> RoIAlign-AR -> box, actor, mask
                                                                        '--> 3x1x1 convs --.
    flow (B,T,3,H,W) --motion ResNet+FPN (own weights)--> 3x1x1 convs ---------------------+-concat per level
                                                                                           '-> RoIAlign-AN -> action

Ablations of Table 3 are constructor choices (see :data:`ABLATIONS`): no action branch and 43
pair classes (Mask R-CNN baseline), no mask head, T = 1 (no temporal layers), no motion stream.
Training the branches separately ("w/o joint training") uses :meth:`ActorActionRCNN.set_trainable`.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from pipeline.a2d.classes import NUM_ACTIONS, NUM_ACTORS
from pipeline.e2e.backbone import (
    PYRAMID_LEVELS, TemporalAggregation, centre_frame, fuse_streams, unflatten_time,
)
from pipeline.e2e.heads import ActorActionRoIHeads
from pipeline.e2e.labels import NUM_PAIR_CLASSES, check_targets, class_to_pair, pair_to_class
from pipeline.e2e.transform import ClipBatch, ClipTransform
from pipeline.models.norms import head_norm_layer
from pipeline.models.pyramid import build_pyramid_backbone

__all__ = ["ActorActionRCNN", "ABLATIONS", "BRANCHES", "build_e2e_model"]

#: Parameter groups of the two branches ("w/o joint training": train one, then the other).
#: The shared appearance backbone belongs to the actor branch, which the paper trains first.
BRANCHES: dict[str, tuple[str, ...]] = {
    "actor": ("appearance.", "rpn.", "roi_heads.box_head.", "roi_heads.box_predictor.",
              "roi_heads.mask_head.", "roi_heads.mask_predictor."),
    "action": ("motion.", "appearance_temporal.", "motion_temporal.", "roi_heads.action_head.",
               "roi_heads.action_predictor."),
}


class ActorActionRCNN(nn.Module):
    """Joint actor-action detection and segmentation on RGB + flow clips.

    Args:
        transform: normalises, resizes and pads clips, flows and targets alike.
        appearance: RGB ResNet+FPN; maps (N, 3, H, W) to a dict with the levels "0".."3" and
            the RPN's extra "pool" level, each (N, C, h, w); exposes ``out_channels``.
        rpn: torchvision RPN over the centre frame's appearance pyramid.
        roi_heads: box / actor / mask / action heads.
        motion: flow ResNet+FPN with levels "0".."3" (same architecture, own weights), or None.
        appearance_temporal, motion_temporal: 3x1x1 aggregation of each stream, or None for the
            single-frame model (then only the centre frame of a clip is used).
        pair_classes: the classifier predicts the 43 actor-action pairs (Mask R-CNN baseline);
            requires a ``roi_heads`` without action head.
    """

    def __init__(
        self,
        *,
        transform: ClipTransform,
        appearance: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: ActorActionRoIHeads,
        motion: nn.Module | None = None,
        appearance_temporal: TemporalAggregation | None = None,
        motion_temporal: TemporalAggregation | None = None,
        pair_classes: bool = False,
    ) -> None:
        super().__init__()
        if pair_classes == roi_heads.has_action():
            raise ValueError("use either an action head (decoupled actor/action) or pair classes")
        if not roi_heads.has_action() and (motion is not None or appearance_temporal is not None):
            raise ValueError("motion stream and temporal layers only feed the action head")
        if motion is not None and (appearance_temporal is None) != (motion_temporal is None):
            raise ValueError("both streams must be aggregated over time, or neither")
        if motion is None and motion_temporal is not None:
            raise ValueError("motion_temporal without a motion stream")
        self.transform = transform
        self.appearance = appearance
        self.motion = motion
        self.appearance_temporal = appearance_temporal
        self.motion_temporal = motion_temporal
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.pair_classes = pair_classes
        # parameters frozen by construction (e.g. the ResNet stem when fine-tuning) stay frozen
        self._frozen = {n for n, p in self.named_parameters() if not p.requires_grad}

    @property
    def num_frames(self) -> int:
        """The clip length T the model expects (1 for the single-frame variants)."""
        return self.appearance_temporal.num_frames if self.appearance_temporal is not None else 1

    @property
    def uses_flow(self) -> bool:
        return self.motion is not None

    def extract_features(self, batch: ClipBatch) -> tuple[OrderedDict[str, Tensor], OrderedDict[str, Tensor] | None]:
        """Backbones and temporal layers.

        Returns:
            The centre frame's appearance pyramid ((B, C, h, w) per level, "pool" included)
            and the fused action pyramid ((B, C * streams, h, w) for "0".."3"), or None
            without action head.
        """
        b, t = batch.rgb.shape[:2]
        c = t // 2
        temporal = self.appearance_temporal is not None
        frames = batch.rgb if temporal else batch.rgb[:, c:c + 1]  # single-frame: centre only
        app = unflatten_time(self.appearance(frames.flatten(0, 1)), b)  # (B, T', C, h, w)
        centre = centre_frame(app, tuple(app))
        if not self.roi_heads.has_action():
            return centre, None
        streams = [self.appearance_temporal(app) if temporal else centre_frame(app)]
        if self.motion is not None:
            if batch.flow is None:
                raise ValueError("this model has a motion stream: pass flows")
            flow = batch.flow if temporal else batch.flow[:, c:c + 1]
            mot = unflatten_time(self.motion(flow.flatten(0, 1)), b)
            streams.append(self.motion_temporal(mot) if temporal else centre_frame(mot))
        return centre, fuse_streams(*(OrderedDict((k, s[k]) for k in PYRAMID_LEVELS) for s in streams))

    def forward(
        self,
        images: Tensor | list[Tensor],
        flows: Tensor | list[Tensor] | None = None,
        targets: list[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Args:
            images: (B, T, 3, H, W) float RGB 0..1, or B tensors (T, 3, H_i, W_i).
            flows: same shape, (x, y, magnitude) channels (:func:`pipeline.flow.encode.flow_to_xym`);
                required with a motion stream, ignored without.
            targets: training only; one dict per clip for its centre frame (see
                :mod:`pipeline.e2e`).

        Returns:
            Training: dict of loss terms (``loss_objectness``, ``loss_rpn_box_reg``,
            ``loss_box_reg``, ``loss_actor``, ``loss_action``, ``loss_mask``; those the variant
            has), to be weighted by :class:`pipeline.e2e.loss.MultitaskLoss`.
            Eval: per clip, at the input size: ``boxes`` (N, 4) float32 xyxy, ``actor`` (N,)
            int64 1..7, ``actor_score`` (N,), ``action_probs`` (N, 9) = p(action 1..9 | actor
            RoI) (one-hot for the pair baseline), ``masks`` (N, H, W) float32 probabilities of
            the predicted actor (absent without mask head).
        """
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        internal = None
        if targets is not None:
            check_targets(targets, [tuple(clip.shape[-2:]) for clip in images])
            internal = []
            for t in targets:
                labels = pair_to_class(t["actor"], t["action"]) if self.pair_classes else t["actor"]
                internal.append({**t, "labels": labels})
        batch = self.transform(images, flows if self.uses_flow else None, internal)
        centre, action_features = self.extract_features(batch)
        t = batch.rgb.shape[1]
        image_list = ImageList(batch.rgb[:, t // 2], batch.image_sizes)
        proposals, rpn_losses = self.rpn(image_list, centre, batch.targets)
        detections, head_losses = self.roi_heads(
            centre, action_features, proposals, batch.image_sizes, batch.targets
        )
        if self.training:
            return {**rpn_losses, **head_losses}
        detections = self.transform.postprocess(detections, batch.image_sizes, batch.original_sizes)
        return [self._to_output(d) for d in detections]

    def _to_output(self, det: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.pair_classes:
            actor, action = class_to_pair(det["labels"])
            action_probs = nn.functional.one_hot(action - 1, NUM_ACTIONS).float()
        else:
            actor = det["labels"]
            # conditional on the RoI being an actor: the actor branch already scores that
            action_probs = det["action_logits"][:, 1:].softmax(dim=1)
        out = {"boxes": det["boxes"], "actor": actor, "actor_score": det["scores"],
               "action_probs": action_probs}
        if "masks" in det:
            out["masks"] = det["masks"][:, 0]
        return out

    def branch_parameters(self, branch: str) -> list[nn.Parameter]:
        """The parameters of ``branch`` ("actor" or "action"; see :data:`BRANCHES`)."""
        if branch not in BRANCHES:
            raise KeyError(f"unknown branch {branch!r}; known: {sorted(BRANCHES)}")
        return [p for n, p in self.named_parameters() if n.startswith(BRANCHES[branch])]

    def set_trainable(self, branch: str, trainable: bool) -> None:
        """Freeze or unfreeze a branch; layers frozen at construction stay frozen."""
        if branch not in BRANCHES:
            raise KeyError(f"unknown branch {branch!r}; known: {sorted(BRANCHES)}")
        for n, p in self.named_parameters():
            if n.startswith(BRANCHES[branch]) and n not in self._frozen:
                p.requires_grad_(trainable)


#: Table 3 of the paper as keyword overrides of :func:`build_e2e_model` ("w/o joint training" is a
#: schedule, see :meth:`ActorActionRCNN.set_trainable`).
ABLATIONS: dict[str, dict[str, object]] = {
    "full": {},
    "maskrcnn_pairs": {"pair_classes": True, "num_frames": 1, "use_flow": False},
    "no_mask": {"use_mask_head": False},
    "no_temporal": {"num_frames": 1},
    "no_flow": {"use_flow": False},
}


def build_e2e_model(
    *,
    depth: int = 101,
    num_frames: int = 3,
    use_flow: bool = True,
    use_mask_head: bool = True,
    pair_classes: bool = False,
    trainable_layers: int = 3,
    norm: str = "frozen_bn",
    fpn_channels: int = 256,
    anchor_sizes: tuple[int, int, int, int, int] = (32, 64, 128, 256, 512),
    min_size: int | tuple[int, ...] = 800,
    max_size: int = 1333,
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    flow_std: float = 1.0,
    representation_size: int = 1024,
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 512,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
    box_detections_per_img: int = 100,
    temporal_init: str = "random",
) -> ActorActionRCNN:
    """Build the model (random weights) from plain arguments.

    Args:
        depth: ResNet depth of both backbones (paper: 101).
        num_frames: context window T (odd; paper: 3); 1 removes the temporal layers.
        use_flow: add the motion stream (flow input).
        use_mask_head: Mask R-CNN mask head; without it, masks come from boxes in post-processing.
        pair_classes: Mask R-CNN baseline: no action branch, classes = the 43 valid pairs.
        trainable_layers: ResNet stages trainable in each backbone (5 = all; 3 when fine-tuning).
        norm: ``frozen_bn`` (fine-tuning), ``bn`` (from scratch) or ``gn`` (GroupNorm in the
            backbones, FPNs and mask head: the layout of the from-scratch segmenter).
        fpn_channels: width of the pyramids and of the mask head (Mask R-CNN: 256); smaller
            only for cheap CPU runs.
        anchor_sizes: RPN anchor size (input pixels) of the levels "0".."3" and "pool"
            (Mask R-CNN: 32..512 for 800 px inputs; smaller for small frames).
        min_size, max_size: resize rule of torchvision's detection transform; a tuple of
            ``min_size`` draws one per clip in training (multi-scale training).
        image_mean, image_std: RGB normalisation (ImageNet statistics, as the pretrained weights).
        flow_std: divisor of the flow channels (after :func:`flow_to_xym`'s own scaling).
        representation_size: width of the box and action MLP heads.
        rpn_pre_nms_top_n, rpn_post_nms_top_n: (train, test) proposal counts.
        rpn_batch_size_per_image, box_batch_size_per_image: sampled anchors / RoIs per frame.
        box_score_thresh, box_nms_thresh, box_detections_per_img: detection post-processing.
        temporal_init: ``random`` (the paper) or ``centre`` (:class:`TemporalAggregation`).
    """
    if pair_classes and (use_flow or num_frames != 1):
        raise ValueError("the pair-class baseline is single-frame RGB: set num_frames=1, use_flow=False")
    appearance = build_pyramid_backbone(depth, pool_level=True, trainable_layers=trainable_layers,
                                        norm=norm, channels=fpn_channels)
    channels = appearance.out_channels
    if len(anchor_sizes) != len(PYRAMID_LEVELS) + 1:
        raise ValueError(f"anchor_sizes needs one size per level and 'pool', got {anchor_sizes}")
    anchors = AnchorGenerator(tuple((int(a),) for a in anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
    rpn = RegionProposalNetwork(
        anchors, RPNHead(channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n={"training": rpn_pre_nms_top_n[0], "testing": rpn_pre_nms_top_n[1]},
        post_nms_top_n={"training": rpn_post_nms_top_n[0], "testing": rpn_post_nms_top_n[1]},
        nms_thresh=0.7,
    )
    num_classes = 1 + (NUM_PAIR_CLASSES if pair_classes else NUM_ACTORS)
    levels = list(PYRAMID_LEVELS)
    mask_parts: tuple[nn.Module | None, ...] = (None, None, None)
    if use_mask_head:
        mask_head = MaskRCNNHeads(channels, [channels] * 4, 1, norm_layer=head_norm_layer(norm))
        mask_parts = (MultiScaleRoIAlign(levels, 14, 2), mask_head,
                      MaskRCNNPredictor(channels, channels, num_classes))
    motion = temporal_a = temporal_m = None
    action_parts: tuple[nn.Module | None, ...] = (None, None, None)
    if not pair_classes:
        if use_flow:
            motion = build_pyramid_backbone(depth, pool_level=False, trainable_layers=trainable_layers,
                                            norm=norm, channels=fpn_channels)
        if num_frames > 1:
            temporal_a = TemporalAggregation(channels, num_frames, init=temporal_init)
            temporal_m = TemporalAggregation(channels, num_frames, init=temporal_init) \
                if use_flow else None
        fused = channels * (2 if use_flow else 1)
        action_parts = (MultiScaleRoIAlign(levels, 7, 2), TwoMLPHead(fused * 7 * 7, representation_size),
                        nn.Linear(representation_size, 1 + NUM_ACTIONS))
    roi_heads = ActorActionRoIHeads(
        box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
        box_head=TwoMLPHead(channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        mask_roi_pool=mask_parts[0], mask_head=mask_parts[1], mask_predictor=mask_parts[2],
        action_roi_pool=action_parts[0], action_head=action_parts[1],
        action_predictor=action_parts[2],
        batch_size_per_image=box_batch_size_per_image, score_thresh=box_score_thresh,
        nms_thresh=box_nms_thresh, detections_per_img=box_detections_per_img,
    )
    transform = ClipTransform(min_size=min_size, max_size=max_size, image_mean=image_mean,
                              image_std=image_std, flow_std=flow_std)
    return ActorActionRCNN(
        transform=transform, appearance=appearance, rpn=rpn, roi_heads=roi_heads, motion=motion,
        appearance_temporal=temporal_a, motion_temporal=temporal_m, pair_classes=pair_classes,
    )
