"""Request and response bodies of the HTTP API.

Ids are strict integers: booleans and floats (even 1.0) are refused instead of being
coerced, so a client bug surfaces as a 422 rather than as a silently different query. A
history row of strings names items by their keys (the catalogue's own, from item_map.tsv):
"12" is the key "12", never the id 12, and one request uses ids or keys, not both. The size
limits come from the settings, so the request model is built per app (and shows them in the
OpenAPI schema).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from config import INT64_MAX, Settings
from mind.retrieval import MAX_DIVERSITY

ItemId = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
MAX_KEY_LEN = 512
ItemKey = Annotated[StrictStr, Field(min_length=1, max_length=MAX_KEY_LEN)]
MAX_WHERE_FIELDS, MAX_WHERE_VALUES = 8, 256
WhereValues = Annotated[list[Annotated[StrictStr, Field(max_length=MAX_KEY_LEN)]],
                        Field(min_length=1, max_length=MAX_WHERE_VALUES)]


def _kind(value: Any) -> str:
    return "an id (integer)" if isinstance(value, int) and not isinstance(value, bool) \
        else "a key (string)" if isinstance(value, str) else "neither"


def _first_kind(rows: Any) -> str:
    for row in rows if isinstance(rows, list) else ():
        for value in row if isinstance(row, list) else ():
            return _kind(value)
    return "neither"


def _mixing(rows: Any) -> str | None:
    """Where a request first mixes ids and keys, as `hist_item[i][j] is ...`; None if not."""
    if not isinstance(rows, list):
        return None
    first = None
    for i, row in enumerate(rows):
        for j, value in enumerate(row if isinstance(row, list) else ()):
            kind = _kind(value)
            if kind == "neither":
                continue
            if first is None:
                first = kind
            elif kind != first:
                return (f"hist_item[{i}][{j}] is {kind} but hist_item's first item is {first}: "
                        "a request names items by ids or by keys, not both")
    return None


class RecallRequestBase(BaseModel):
    """Fields common to every RecallRequest; the limited list types are added per app."""

    model_config = ConfigDict(extra="forbid")

    exclude_history: StrictBool = Field(
        True, description="Leave the user's own history items out of the answer"
    )
    return_: Literal["ids", "items"] = Field(
        "ids", alias="return",
        description='"ids": rows of item ids or keys (as the request named them); "items": rows '
        'of {"item", "score", "interest", ...metadata}, where interest is the index of the '
        "interest vector that found the item (score and interest are null for the popular "
        "items a user with no known history gets)")
    diversity: Annotated[float, Field(strict=True, ge=0, le=MAX_DIVERSITY,
                                      allow_inf_nan=False)] | None = Field(
        None,
        description="lambda of ComiRec's controllable aggregation: each place goes to the item "
        "with the best score - lambda x (items already chosen that share its category), so a "
        "larger lambda spreads the answer over more categories; 0 = by score alone; omitted = "
        "the model config's runner.merge_lambda. Needs a catalogue with a category column "
        f"(category or genre); at most {MAX_DIVERSITY:g}",
        examples=[0.1])
    where: dict[str, WhereValues] | None = Field(
        None, max_length=MAX_WHERE_FIELDS,
        description='Only items whose metadata field holds one of the values, e.g. '
        '{"genre": ["Comedy", "Drama"]}; several fields must all match. Fields are the '
        "catalogue's metadata columns (GET /docs lists none: they depend on the model)",
        examples=[{"genre": ["Comedy"]}])



def recall_request_model(settings: Settings) -> type[RecallRequestBase]:
    """The /rec/recall body with this service's limits baked into its schema."""
    limits = Field(min_length=1, max_length=settings.MAX_HISTORY_LEN)
    users = Field(min_length=1, max_length=settings.MAX_BATCH_USERS)
    # Rows of ids first: the tutorial's rows validate at the first try (as fast as before).
    history = Annotated[list[ItemId], limits] | Annotated[list[ItemKey], limits]
    # A request that fails is validated again as all ids or all keys (what its first item is),
    # so each error reads `hist_item[0][1]: must be an integer`, not once per kind of row.
    one_kind = {kind: TypeAdapter(Annotated[list[Annotated[list[item], limits]], users])
                for kind, item in (("ids", ItemId), ("keys", ItemKey))}

    class RecallRequest(RecallRequestBase):
        """Click histories of a batch of users (oldest click first); rows may differ in length."""

        model_config = ConfigDict(
            extra="forbid",
            populate_by_name=True,
            json_schema_extra={
                "examples": [{"top_k": 50, "hist_item": [[43, 23, 65], [675, 3456, 8654]]},
                             {"top_k": 10, "hist_item": [["50", "172", "181"]],
                              "return": "items", "where": {"genre": ["Sci-Fi"]}}]
            },
        )

        top_k: Annotated[StrictInt, Field(ge=1, le=settings.MAX_TOP_K)] = Field(
            50, description="How many items to return per user (at most); default 50"
        )
        hist_item: Annotated[list[history], users] = Field(description="One row per user, oldest click first: item ids (integers) or "
                  "item keys (strings, the catalogue's own; the answer then holds keys), not "
                  "both; ids and keys the model does not know are ignored")

        @field_validator("hist_item", mode="wrap")
        @classmethod
        def _one_kind(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
            try:
                rows = handler(value)
            except ValidationError:
                mixed = _mixing(value)
                if mixed:
                    raise PydanticCustomError("mixed_ids_and_keys", mixed) from None
                one_kind["keys" if _first_kind(value) == "a key (string)" else "ids"
                         ].validate_python(value)
                raise
            if len({isinstance(r[0], str) for r in rows}) > 1:
                raise PydanticCustomError("mixed_ids_and_keys", _mixing(value) or "mixed rows")
            return rows

    return RecallRequest


class RecalledItem(BaseModel):
    """One recalled item of a `"return": "items"` answer; the catalogue's metadata columns
    (title, genre, ...) follow as further fields."""

    model_config = ConfigDict(extra="allow")

    item: int | str = Field(description="The item's id, or its key when the request sent keys")
    score: float | None = Field(description="Inner product of the item and the interest")
    interest: int | None = Field(description="Index of the interest vector that found it")


RecallResponse = list[list[int]] | list[list[str]] | list[list[RecalledItem]]


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
