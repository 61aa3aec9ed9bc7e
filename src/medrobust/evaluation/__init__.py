"""Evaluation: pure metric functions (numpy in, numbers out: ``classification``,
``attack_success``) and the experiment runner (``runner``), whose stages (``stage_attacks``,
``stage_defenses``, ``stage_detection``) run baseline -> attacks -> defenses -> detection and
persist each batch in the run directory (``run_dir``)."""
