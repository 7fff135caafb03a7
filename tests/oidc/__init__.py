"""The test OpenID Connect provider (provider.mjs) and its Python side (provider.py)."""
