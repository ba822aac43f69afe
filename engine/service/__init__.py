"""The service: the composition root that builds and wires the daemon (``daemon``), its CLI,
HTTP server and admin API, metrics exporter, config reload, sd_notify, network intake and logs.

Nothing below this package imports it.
"""
