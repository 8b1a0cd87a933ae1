"""``deploy/``: the Collector/Prometheus/Grafana stack's files, checked with real tools."""
