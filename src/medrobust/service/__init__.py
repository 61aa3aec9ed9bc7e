"""The medrobust web service: upload checks, the jobs queue, the web process and its workers."""
