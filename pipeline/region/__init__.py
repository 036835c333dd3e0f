"""Dang et al. 2018 region-mask method: data and the stages that train and apply it.

Stages (each ``python -m pipeline.region.<stage>``):

- ``train_baseline``: stage 1 of section 3.4, front-end + DeepLab baseline back-end (Eq. 1);
- ``features``: the frozen front-end's fused features of every annotated frame, per video;
- ``train_region``: stage 2, the region back-end on cached features and region masks;
- ``predict``: label maps of the test videos, baseline or region model.

All four read the ``region_model`` config section (:class:`pipeline.region.config.RegionConfig`);
the two training stages run the shared loop of :mod:`pipeline.training`.
"""
