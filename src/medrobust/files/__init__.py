"""Files: writing them so a killed process leaves only complete ones (:mod:`~medrobust.files.atomic_files`),
naming them in messages whatever bytes their names hold (:mod:`~medrobust.files.printable`), and
telling a model file's format from its content (:mod:`~medrobust.files.model_formats`).

A leaf room: torch-free, it imports no other room, and every room (the faces too) may use it.
"""
