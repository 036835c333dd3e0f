"""Stage ``flow``: optical flow for every annotated frame and its temporal context.

- :mod:`pipeline.flow.stage`: the stage (config, backend choice, frames cache -> flow cache).
- :mod:`pipeline.flow.dis`, :mod:`pipeline.flow.ptlflow_backend`: the two backends.
- :mod:`pipeline.flow.cache`: the cache format, :func:`read_flow_cache`.
- :mod:`pipeline.flow.encode`: model inputs computed on read (``flow_to_xym``, ``flow_to_rgb``).

Run as ``python -m pipeline.flow --frames F.h5 --out O.h5`` (see ``__main__``).
"""
