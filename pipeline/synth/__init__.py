"""Stage ``synth``: a synthetic actor-action dataset written in the exact A2D release format.

Seven actor classes recognisable by shape, colour and texture (:mod:`.appearance`), nine actions
defined by motion over time (:mod:`.motion`), composed into clips with occlusion, a textured
background, a panning camera and sensor noise (:mod:`.scene`), balanced over the 43 valid pairs
and split into train/test (:mod:`.plan`), and written as ``videoset.csv``, ``clips320H/*.mp4``
and ``Annotations/{mat,col}`` (:mod:`.writer`). The embedded default dataset of the pipeline.
"""

from pipeline.synth.plan import SynthConfig
from pipeline.synth.writer import generate_release

__all__ = ["SynthConfig", "generate_release"]
