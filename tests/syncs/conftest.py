"""Sync tests run on PostgreSQL (the production store for several replicas)."""

from __future__ import annotations

import pytest


@pytest.fixture
async def store_url(pg_url: str) -> str:
    return pg_url
