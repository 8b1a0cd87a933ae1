"""The package as a whole: public API, configuration, security, and the repository's own tools."""
