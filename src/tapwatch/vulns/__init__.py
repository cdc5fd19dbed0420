"""Vulnerabilities, recommendations and risk, from feeds imported as files (no internet needed)."""
