from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    """Whether the API is up (needs no API key)."""
    return {"status": "ok"}
