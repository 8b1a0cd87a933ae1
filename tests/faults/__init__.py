"""Fault injection: broken exporters, processors, readers, handlers and debugpy."""
