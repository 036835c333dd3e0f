"""The run report: figures, per-stage timing, qualitative panels and one HTML page.

- :mod:`pipeline.report.timing`: per-stage milliseconds per frame from Snakemake benchmark TSVs,
  beside Dang et al.'s "computational complexity" numbers (``results/tables/timing.md/.csv``);
- :mod:`pipeline.report.confusion`: raw confusion counts (file formats, or recomputed from a
  predictions folder with the evaluator);
- :mod:`pipeline.report.figures`: matplotlib figures (per-class accuracy, confusion heat maps,
  training curves, timing bars);
- :mod:`pipeline.report.qualitative`: frame / GT / predictions / region masks side by side;
- :mod:`pipeline.report.html`: the self-contained ``index.html``;
- ``python -m pipeline.report``: the CLI building all of it from explicit inputs.
"""
