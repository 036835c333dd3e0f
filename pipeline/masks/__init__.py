"""Instance region masks ``{b_i, M_i, score_i}`` of every annotated frame (Dang et al. 2018, 3.1).

The paper takes the candidate regions of the region model from an instance segmenter (FCIS)
trained on A2D itself; we use torchvision's Mask R-CNN. Three sources fill the same cache
(``results/masks/{source}/{video}.h5``, see :mod:`pipeline.masks.cache`):

- ``model``: the segmenter trained on the dataset's train split (:mod:`pipeline.masks.train`);
- ``checkpoint``: the same network from a weights file a user provides (e.g. a COCO model, the
  "COCO" row of the paper's Table 3; classes mapped by :mod:`pipeline.masks.labels`);
- ``gt``: the ground-truth instances of the ``.mat`` files (the upper-bound row), score 1.

Modules: ``segmenter`` (the network, ``build_segmenter``), ``weights`` (weight files),
``labels`` (detector classes -> A2D actors), ``dataset`` (training samples), ``inference``
(post-processing to regions), ``ap`` (mask AP and mean best IoU), ``regions`` / ``cache`` (the
record type and its file), and the stages ``train`` and ``run``.
"""
