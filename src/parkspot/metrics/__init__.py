"""Prometheus metrics of one app: the registry and what is counted as it happens
(``registry``), the HTTP request middleware (``http``), what is read at scrape time
(``collector``) and ``GET /metrics`` (``router``)."""
