"""Integrations with web frameworks: :mod:`.flask` and :mod:`.django` (each an optional extra)."""
