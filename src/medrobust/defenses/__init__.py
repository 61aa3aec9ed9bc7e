"""Preprocessing defenses: images in [0, 1] (B, C, H, W) in, images out, same shape and range.

JPEG compression, ROF total variation (the study's formula), Guo et al.'s randomized TVM,
Xu et al.'s bit-depth and median squeezers, composition by name (``build_defense("jpeg+tv")``,
the study's hybrid defense), and :class:`~medrobust.defenses.defended.DefendedClassifier`, a
classifier behind a defense that adaptive attacks (BPDA, EOT) can differentiate through.

Each defense is a function (``medrobust.defenses.jpeg.jpeg``, ``...total_variation.tv_denoise``)
and an ``nn.Module`` twin; import from the submodules (this package imports nothing heavy).
"""
