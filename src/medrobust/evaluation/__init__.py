"""Evaluation: a run as a sequence of stages over one frozen context, and the numbers it reports.

* :mod:`~medrobust.evaluation.runner` — :func:`~medrobust.evaluation.runner.run_experiment`: claim
  the run folder (:mod:`~medrobust.evaluation.run_folder`), resolve classes
  (:mod:`~medrobust.evaluation.class_plan`), images (:mod:`~medrobust.evaluation.run_data`) and
  models (:mod:`~medrobust.evaluation.run_models`), then run the stages
  (:mod:`medrobust.evaluation.stages`) over a :class:`~medrobust.evaluation.context.RunContext`
  and write the metrics (:mod:`~medrobust.evaluation.run_metrics`);
* typed names of stages (:mod:`~medrobust.evaluation.stage_keys`), the configuration
  (:mod:`~medrobust.evaluation.config`), the result types (:mod:`~medrobust.evaluation.results`);
* pure metric functions: :mod:`~medrobust.evaluation.classification`,
  :mod:`~medrobust.evaluation.attack_success`, :mod:`~medrobust.evaluation.robustness_curve`,
  the adaptive portfolio's rules (:mod:`~medrobust.evaluation.adaptive_portfolio`) and the
  scorecard (:mod:`~medrobust.evaluation.scorecard`).

The units of work, engines and batch files the stages run on are :mod:`medrobust.execution`'s.
"""
