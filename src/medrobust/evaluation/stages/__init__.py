"""The stages of a run, one module each, in the order the runner calls them: ``baseline`` (the
model on every test image, and the attack subset), ``attacks`` (white-box, transferred, sweeps),
``transfer`` (the transfer matrix), ``defenses`` (each defense's cost, non-adaptive figures and
its ``adaptive`` portfolio), ``detection`` (both detectors, calibrated), ``samples`` (the report's
pictures), ``per_image`` (the per-image table), and when asked for ``robustbench`` and
``certify`` (randomized smoothing's certificates). Each is ``run(ctx, ...) -> Outcome`` over the
frozen :class:`~medrobust.evaluation.context.RunContext`, persisted in the run folder batch by
batch, so a resumed run recomputes nothing finished.

Adding a stage: a module here with ``run(ctx, ...)``, one line in
:func:`medrobust.evaluation.runner.run_experiment`, and (when it reports numbers) a field of
:class:`~medrobust.evaluation.results.RunMetrics` set in :mod:`medrobust.evaluation.run_metrics`.
"""
