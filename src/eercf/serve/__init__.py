"""The search service: ``create_app(index)`` gives the FastAPI app ``eercf serve`` runs (the JSON
API, the search page, batched searches over one snapshot at a time, writes as jobs)."""
from .app import create_app

__all__ = ["create_app"]
