"""Pacing: FIFO token buckets (local or Redis-shared) that every upstream call passes through."""
