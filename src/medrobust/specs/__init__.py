"""Specs: how a user names things, read the same way by the command line, configuration files, the
Python layer and the service — the component registries and their text specs (``pgd:eps=8/255``,
``jpeg+tv``) with budgets as numbers (:mod:`~medrobust.specs.components`), the largest budget
accepted (:mod:`~medrobust.specs.eps_limit`), and the names a model contract takes
(:mod:`~medrobust.specs.contract_names`).

A leaf room: torch-free (the service's web process checks specs with it), it imports no other room,
and every room may use it.
"""
