"""Request and response bodies of the HTTP API.

Ids are strict integers: JSON strings ("12"), booleans and floats (even 1.0)
are refused instead of being coerced, so a client bug surfaces as a 422 rather
than as a silently different query. The size limits come from the settings,
so the request model is built per app (and shows them in the OpenAPI schema).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from config import INT64_MAX, Settings

ItemId = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]


class RecallRequestBase(BaseModel):
    """Fields common to every RecallRequest; the limited list types are added per app."""

    model_config = ConfigDict(extra="forbid")

    exclude_history: StrictBool = Field(
        True, description="Leave the user's own history items out of the answer"
    )


def recall_request_model(settings: Settings) -> type[RecallRequestBase]:
    """The /rec/recall body with this service's limits baked into its schema."""
    history = Annotated[
        list[ItemId],
        Field(min_length=1, max_length=settings.MAX_HISTORY_LEN),
    ]

    class RecallRequest(RecallRequestBase):
        """Click histories of a batch of users (oldest click first); rows may differ in length."""

        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "examples": [{"top_k": 50, "hist_item": [[43, 23, 65], [675, 3456, 8654]]}]
            },
        )

        top_k: Annotated[StrictInt, Field(ge=1, le=settings.MAX_TOP_K)] = Field(
            50, description="How many item ids to return per user (at most)"
        )
        hist_item: Annotated[
            list[history], Field(min_length=1, max_length=settings.MAX_BATCH_USERS)
        ] = Field(description="One row of item ids per user; ids the model does not know are ignored")

    return RecallRequest


RecallResponse = list[list[int]]


class InsertResponse(BaseModel):
    status: Literal["ok"] = "ok"
    count: int = Field(description="Items now in the collection")
    seconds: float = Field(description="Time taken by the load, in seconds")


class CountResponse(BaseModel):
    count: int = Field(description="Items in the collection (0 when it is empty or missing)")


class StatusResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(description='Each check: "ok" or the reason it failed')


class ErrorResponse(BaseModel):
    detail: str
    request_id: str | None = None


class FieldError(BaseModel):
    loc: str
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: str = Field(description="Every problem found, `where: what` joined by '; '")
    errors: list[FieldError]
