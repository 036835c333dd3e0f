"""The A2D dataset: classes and palette, release layout, videoset.csv and annotation files."""
