"""Thin Ray adapters around the pure logic in ``components``.

These are the only modules in ``components`` that import Ray: Ray Data ingestion and
splitting, the Ray Train XGBoost trainer, and Ray Data batch scoring. Everything they run per
block or per worker is a plain function from the modules next door.
"""
