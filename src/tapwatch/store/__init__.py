"""Inventory storage: SQLAlchemy models, Alembic migrations, and the repository functions."""
