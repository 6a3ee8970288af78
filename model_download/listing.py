"""What a hub offers: one page of models found by a search, as every hub that can list says it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ModelSummary(BaseModel):
    """One model a hub lists."""

    id: str = Field(description="The model's id on its hub, ready for hub:id.")
    revision: str | None = Field(None, description="A tag or commit, where the hub lists them.")
    updated: datetime | None = None
    downloads: int | None = None
    tags: list[str] = Field(default_factory=list)


class SearchPage(BaseModel):
    """A page of a hub's answer to a search."""

    hub: str
    query: str | None = None
    page: int = Field(ge=1)
    page_size: int = Field(ge=1, le=500)
    models: list[ModelSummary]
    has_more: bool = Field(description="Whether another page follows.")
