"""``scopewatch._core``: bookkeeping, classification, attribution, explanations of violations."""
