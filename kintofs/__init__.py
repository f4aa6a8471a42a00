"""kintofs: a self-hosted daemon that speaks the Kinto HTTP API v1 and keeps every object as plain JSON files."""

__version__ = "0.1.0"
