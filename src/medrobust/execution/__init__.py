"""Execution: how the evaluation's work is cut into units and run, here or on a cluster.

* :mod:`~medrobust.execution.units` — a unit of work: one batch of one stage, plain data (the
  models it needs named, its images as 8-bit arrays, its seed), run by a
  :class:`~medrobust.execution.units.Workbench` (the models, loaded once, and the device);
  :mod:`~medrobust.execution.detect_units` holds the detection stage's units;
* :mod:`~medrobust.execution.engines` — where units run: in this process, or on Ray actors that
  each load the models once (:mod:`~medrobust.execution.model_shipping`);
* :mod:`~medrobust.execution.resumable_stage` — a stage as batch files in its folder: finished
  batches are read back, the rest computed, whatever engine computed what;
* :mod:`~medrobust.execution.batch_files` and :mod:`~medrobust.execution.pixels` — arrays on
  disk, and the 8-bit grid images are stored and scored on;
* :mod:`~medrobust.execution.crafting` — one batch of adversarial images, crafted and scored the
  same way by every caller; :mod:`~medrobust.execution.progress` — the progress protocol.

Arrows: ``evaluation`` and the public layer use this room; it uses ``attacks``, ``defenses``,
``detection`` and ``models``, and knows nothing of run folders or configurations.
"""
