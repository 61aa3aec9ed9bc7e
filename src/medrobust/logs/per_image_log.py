"""The logger of per-image lines: the study's detector lines (``file: Attack Detected | SSIM:
0.88 | Orig: Normal -> Adv: Pneumothorax | ...``) and each skipped file.

There can be thousands of them, so they do not belong on a terminal: a run writes them to
``RUN/log.txt`` (:func:`medrobust.evaluation.run_log.run_log`), and the command line shows
them only with ``--verbose``. Every room logs such lines through :data:`per_image_log`.
"""

from __future__ import annotations

import logging

PER_IMAGE_LOGGER = "medrobust.per_image"

per_image_log = logging.getLogger(PER_IMAGE_LOGGER)
