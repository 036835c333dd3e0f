"""actorseg: actor-action semantic segmentation in video (A2D), as a Snakemake DAG of cached stages."""

__version__ = "0.1.0"
