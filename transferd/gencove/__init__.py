"""The Gencove REST API v2 client (see ../shared/gencove-api.md)."""

from transferd.gencove.client import GencoveClient
from transferd.gencove.models import Credentials, UploadSlot

__all__ = ["Credentials", "GencoveClient", "UploadSlot"]
