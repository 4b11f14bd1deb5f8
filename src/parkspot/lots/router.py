"""Routes under /api/v1/lots and /api/v1/spots."""

from fastapi import APIRouter

router = APIRouter(tags=["lots"])
