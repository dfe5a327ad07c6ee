"""The Record Mutation API's request and response models: validation and OpenAPI from one source.

The shapes follow the reference docs: ``records`` may be sent as ``data`` (the docs' type block calls
it so) and ``upstream_ids`` as ``upstream_id``. Creates carry no ``upstream_id``; updates must. Upstream
ids are restricted to the characters real provider ids use, because translators put them in URL paths.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from gateway.domain.models import CollectionId, ObjectId, Record

MAX_RECORDS = 1000
UPSTREAM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$"
UpstreamId = Annotated[str, StringConstraints(pattern=UPSTREAM_ID_PATTERN)]
Kind = Literal["create", "update", "delete"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CreateRecord(_Strict):
    """A record to create: ``data`` only, in the provider's own field names (the stream's shape)."""

    data: dict[str, Any]


class UpdateRecord(_Strict):
    """A partial update (PATCH semantics): only the fields in ``data`` change."""

    upstream_id: UpstreamId
    data: dict[str, Any]


class _Mutation(_Strict):
    sync_id: ObjectId
    collection_id: CollectionId
    await_consumer_ids: list[ObjectId] = Field(default_factory=list, max_length=100)
    await_consumers_timeout: int = Field(default=30000, ge=0, le=600_000, description="milliseconds")


class CreateMutation(_Mutation):
    kind: Literal["create"]
    records: list[CreateRecord] = Field(
        min_length=1, max_length=MAX_RECORDS, validation_alias=AliasChoices("records", "data")
    )


class UpdateMutation(_Mutation):
    kind: Literal["update"]
    records: list[UpdateRecord] = Field(
        min_length=1, max_length=MAX_RECORDS, validation_alias=AliasChoices("records", "data")
    )


def _one_or_many(value: Any) -> Any:
    """A delete of one record may name it as a plain string: ``"upstream_id": "003..."``."""
    return [value] if isinstance(value, str) else value


class DeleteMutation(_Mutation):
    kind: Literal["delete"]
    upstream_ids: Annotated[
        list[UpstreamId], BeforeValidator(_one_or_many, json_schema_input_type=UpstreamId | list[UpstreamId])
    ] = Field(min_length=1, max_length=MAX_RECORDS, validation_alias=AliasChoices("upstream_ids", "upstream_id"))


MutationRequest = Annotated[CreateMutation | UpdateMutation | DeleteMutation, Field(discriminator="kind")]
Mutation = CreateMutation | UpdateMutation | DeleteMutation
BY_KIND: dict[str, type[CreateMutation] | type[UpdateMutation] | type[DeleteMutation]] = {
    "create": CreateMutation,
    "update": UpdateMutation,
    "delete": DeleteMutation,
}


class MutationResponse(BaseModel):
    """200 answer: every record in request order, as the upstream now has it."""

    records: list[Record]
