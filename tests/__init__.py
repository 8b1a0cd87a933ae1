"""scopewatch's tests, by layer (see each folder's docstring); shared fixtures in conftest.py."""
