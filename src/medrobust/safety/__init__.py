"""Safety: what medrobust refuses in an untrusted file before reading it — archive members that
leave their folder, link elsewhere or expand out of proportion (:mod:`~medrobust.safety.archive_members`),
zip-format model files checked from their table of contents (:mod:`~medrobust.safety.model_archive`),
and YAML configurations with aliases or of absurd size (:mod:`~medrobust.safety.safe_yaml`).

A leaf room: torch-free, it imports no other room, and every room (the faces too) may use it.
"""
