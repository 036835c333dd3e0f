"""The one training loop of every training stage: the segmenter (:mod:`pipeline.masks.train`),
Dang et al.'s stages 1 and 2 (:mod:`pipeline.region.train_baseline`, ``train_region``) and Ji
et al.'s model (:mod:`pipeline.e2e.train`).

Modules: ``engine`` (:class:`~pipeline.training.engine.Trainer`: resume, NaN stop, DDP,
gradient accumulation), ``schedule`` (data order and learning-rate schedules, pure functions of
the step), ``curves`` (loss history files), ``precision`` (autocast and device moves, also used
by the predictors) and ``determinism`` (thread count and deterministic kernels of a stage).
"""
