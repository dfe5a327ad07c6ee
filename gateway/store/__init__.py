"""Persistence: SQLAlchemy Core tables, queries and Alembic migrations over SQLite or PostgreSQL."""
