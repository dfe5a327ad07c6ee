"""Secrets at rest: AES-GCM encryption with key ids (crypto) and credential access (credentials)."""
