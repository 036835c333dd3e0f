"""RoI heads: Mask R-CNN's box / actor / mask heads plus the action classifier of Ji et al. 2018.

The actor heads read the centre frame's appearance pyramid through RoIAlign-AR; the action
classifier reads the fused, temporally aggregated two-stream pyramid through its own RoIAlign-AN,
on the same RoIs (section 3.2). Proposal sampling, box coding, detection post-processing and the
box / mask losses are torchvision's :class:`RoIHeads` machinery, unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import (
    RoIHeads, fastrcnn_loss, maskrcnn_inference, maskrcnn_loss,
)

from pipeline.e2e.loss import action_loss

__all__ = ["ActorActionRoIHeads"]


class ActorActionRoIHeads(RoIHeads):
    """Box regression, actor classification, class-specific masks and action classification.

    Args:
        box_roi_pool, box_head, box_predictor: as in torchvision's Faster R-CNN; the predictor's
            classes are bg + 7 actors (or bg + 43 pairs for the cross-product baseline).
        mask_roi_pool, mask_head, mask_predictor: as in Mask R-CNN, or all None (no mask head).
        action_roi_pool, action_head, action_predictor: RoIAlign-AN over the fused pyramid, a
            representation head and a Linear to bg + 9 action logits; or all None (baseline).
        fg_iou_thresh .. detections_per_img: torchvision's :class:`RoIHeads` arguments.
    """

    def __init__(
        self,
        *,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        mask_roi_pool: nn.Module | None,
        mask_head: nn.Module | None,
        mask_predictor: nn.Module | None,
        action_roi_pool: nn.Module | None,
        action_head: nn.Module | None,
        action_predictor: nn.Module | None,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__(
            box_roi_pool, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh,
            batch_size_per_image, positive_fraction, None, score_thresh, nms_thresh,
            detections_per_img, mask_roi_pool, mask_head, mask_predictor,
        )
        parts = (action_roi_pool, action_head, action_predictor)
        if any(p is None for p in parts) and not all(p is None for p in parts):
            raise ValueError("action_roi_pool, action_head and action_predictor go together")
        self.action_roi_pool = action_roi_pool
        self.action_head = action_head
        self.action_predictor = action_predictor

    def has_action(self) -> bool:
        return self.action_predictor is not None

    def classify_actions(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """RoIAlign-AN + action head: (sum N_i, 10) logits for the boxes of every clip."""
        x = self.action_roi_pool(features, boxes, image_shapes)
        return self.action_predictor(self.action_head(x))

    def forward(  # type: ignore[override]  # extra action_features argument
        self,
        features: dict[str, Tensor],
        action_features: dict[str, Tensor] | None,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Args:
            features: centre-frame appearance pyramid, (B, 256, h, w) per level.
            action_features: fused pyramid for the action classifier, or None without one.
            proposals: B (P_i, 4) RPN boxes in transformed image pixels.
            image_shapes: B (h, w) transformed sizes.
            targets: in training, B dicts with ``boxes``, ``labels`` (the classifier's classes),
                ``masks`` and, with an action head, ``action`` (1..9 or -1).

        Returns:
            (detections, losses). In training, detections is empty and losses holds
            ``loss_actor``, ``loss_box_reg``, ``loss_mask`` and ``loss_action`` (those the
            configuration has). In eval, one dict per clip: ``boxes`` (N, 4), ``labels`` (N,),
            ``scores`` (N,), ``masks`` (N, 1, 28, 28) probabilities of the predicted class,
            ``action_logits`` (N, 10).
        """
        if self.has_action() and action_features is None:
            raise ValueError("the action head needs action_features")
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        x = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(x)

        if not self.training:
            return self._detect(features, action_features, class_logits, box_regression,
                                proposals, image_shapes), {}

        loss_actor, loss_box = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        losses = {"loss_actor": loss_actor, "loss_box_reg": loss_box}
        if self.has_action():
            action_targets = []
            for t, idx, lab in zip(targets, matched_idxs, labels):
                if len(t["action"]):
                    act = t["action"][idx]
                else:  # frame without actors: every RoI is background
                    act = torch.zeros_like(lab)
                # background RoIs learn the action background class; positives their instance's
                # action, or nothing when it is IGNORE_ACTION
                action_targets.append(torch.where(lab > 0, act, torch.zeros_like(act)))
            logits = self.classify_actions(action_features, proposals, image_shapes)
            losses["loss_action"] = action_loss(logits, torch.cat(action_targets))
        if self.has_mask():
            pos = [torch.where(lab > 0)[0] for lab in labels]
            mask_boxes = [p[i] for p, i in zip(proposals, pos)]
            mask_logits = self.mask_predictor(
                self.mask_head(self.mask_roi_pool(features, mask_boxes, image_shapes))
            )
            losses["loss_mask"] = maskrcnn_loss(
                mask_logits, mask_boxes, [t["masks"] for t in targets],
                [t["labels"] for t in targets], [m[i] for m, i in zip(matched_idxs, pos)],
            )
        return [], losses

    def _detect(
        self,
        features: dict[str, Tensor],
        action_features: dict[str, Tensor] | None,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        result = [{"boxes": b, "labels": l, "scores": s} for b, l, s in zip(boxes, labels, scores)]
        if self.has_action():
            logits = self.classify_actions(action_features, boxes, image_shapes)
            for r, lg in zip(result, logits.split([len(b) for b in boxes])):
                r["action_logits"] = lg
        if self.has_mask():
            mask_logits = self.mask_predictor(
                self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
            )
            for r, m in zip(result, maskrcnn_inference(mask_logits, labels)):
                r["masks"] = m
        return result

