"""Helpers shared by the test folders: fault parts, reference probes, markers, paths, a browser."""
