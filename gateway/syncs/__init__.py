"""Syncs: backfill and change capture from the upstreams into the stream."""
