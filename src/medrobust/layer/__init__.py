"""The public layer's implementations, one module per job; use them as ``import medrobust as mr``
(``mr.attack``, ``mr.evaluate``...). The faces (the command line, the service) call only these,
the configuration and result types, and the report."""
