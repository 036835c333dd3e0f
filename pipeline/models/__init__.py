"""Neural-network modules of Dang et al. 2018 (BMVC), "Actor-action semantic segmentation with
region masks": front-end, DeepLab baseline, region back-end, loss and joint post-processing.

Modules take plain arguments; each file ends with its ``build_*`` factory:

- :mod:`.frontend`: two-stream dilated ResNet, early fusion (section 3.2).
- :mod:`.aspp` + :mod:`.baseline`: the DeepLab-type baseline (Fig. 2b), training stage 1.
- :mod:`.region_to_pixel`: the region-to-pixel layer (Eq. 2-3).
- :mod:`.region_head`: region pooling + FC + region-to-pixel (Fig. 2c), training stage 2.
- :mod:`.losses`: Eq. 1 and the non-finite loss guard.
- :mod:`.joint`: joint actor-action labels from the two heads.
"""
