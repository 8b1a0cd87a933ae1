"""Example programs shipped with scopewatch (``scopewatch demo`` runs ``demo_service``)."""
