"""Exporters: the same core read by machines instead of people (Prometheus ``/metrics``)."""
