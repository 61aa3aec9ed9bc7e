"""Logs: what a run says as it goes — the per-image lines (detections, skipped files) that go to
``RUN/log.txt`` (:mod:`~medrobust.logs.per_image_log`), and the time left of a stage after its
first batch (:mod:`~medrobust.logs.stage_timer`).

A leaf room: torch-free, it imports no other room, and every room (the faces too) may use it.
"""
