"""The HTTP infill API's bodies, version 1 (docs/serving.md): pydantic models FastAPI validates and puts in
/openapi.json, and `to_job`, which turns a valid body into the engine's request.

Types and ranges are checked here (FastAPI answers 422 naming the field); what only the combination of
fields can get wrong (both forms given, holes that do not match segments, no text at all) is a
`BadRequest` (400). Models are strict: "8" is not a number of steps, and unknown fields are refused, so a
misspelt option fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from dg_lsp.engine.errors import RequestError
from dg_lsp.engine.request import MAX_CANVAS, Hole, InfillRequest, SamplerConfig
from dg_lsp.serving.batcher import Job

API_VERSION = "1"
LINE_CANVAS, BLOCK_CANVAS = 16, 48  # the language server's defaults (options.inline)
MAX_CANVASES = 32
MAX_HOLES = 64  # the language server's fill-holes limit; bounds the work one body can ask for
STRICT = ConfigDict(extra="forbid", strict=True)


class BadRequest(Exception):
    """A body of the right types that cannot be served as it is (400)."""


class _SamplerBase(BaseModel):
    model_config = STRICT

    @model_validator(mode="after")
    def _engine_accepts(self):
        try:
            self.to_config()
        except RequestError as exc:  # its message names the setting, the value and what was expected
            raise ValueError(str(exc)) from None
        return self

    def to_config(self) -> SamplerConfig:
        return SamplerConfig(**self.model_dump())


def _sampler_fields() -> dict:
    """Every SamplerConfig field with its type and default: the API takes any of them, and a field the
    engine adds later is in the API without a second list to keep in step."""
    hints = typing.get_type_hints(SamplerConfig)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(SamplerConfig)}


Sampler = create_model("Sampler", __base__=_SamplerBase, **_sampler_fields())
Sampler.__doc__ = "How the denoising loop commits tokens: any field of the engine's SamplerConfig (snake_case)."


class HoleBody(BaseModel):
    model_config = STRICT
    canvas: int = Field(ge=1, le=MAX_CANVAS, description="canvas length in tokens")
    init: str = Field("", description="existing text to rewrite ('' fills the hole)")


class InfillBody(BaseModel):
    """Either prefix/suffix (one hole) or segments + holes (segments[0] | hole 0 | segments[1] | ...)."""

    model_config = STRICT
    prefix: str | None = Field(None, description="text before the single hole")
    suffix: str = Field("", description="text after the single hole")
    segments: list[str] | None = Field(None, max_length=MAX_HOLES + 1, description="text around the holes")
    holes: list[HoleBody] | None = Field(None, min_length=1, max_length=MAX_HOLES)
    mode: Literal["line", "block"] = Field("line", description="default canvas: 16 (line) or 48 (block) tokens")
    max_tokens: int | None = Field(None, ge=1, le=MAX_CANVAS, description="canvas length of the single hole")
    max_canvases: int = Field(1, ge=1, le=MAX_CANVASES, description="a single hole may continue canvas after canvas")
    sampler: Sampler = Field(default_factory=Sampler)  # type: ignore[valid-type]
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of sampling when temperature > 0")


def to_job(body: InfillBody) -> Job:
    """The engine's request for a valid body; `BadRequest` says what combination is wrong."""
    cursor_form = body.prefix is not None or "suffix" in body.model_fields_set
    holes_form = body.segments is not None or body.holes is not None
    if cursor_form and holes_form:
        raise BadRequest("give either prefix/suffix (one hole) or segments/holes, not both")
    if holes_form:
        if body.segments is None or body.holes is None:
            raise BadRequest("segments and holes go together: segments[0] | hole 0 | segments[1] | ... "
                             f"(got {'segments' if body.holes is None else 'holes'} only)")
        if body.max_tokens is not None:
            raise BadRequest("max_tokens sets the single hole's canvas; with segments/holes give each hole's canvas")
        segments, holes = tuple(body.segments), tuple(Hole(h.canvas, h.init) for h in body.holes)
    elif body.prefix is None:
        raise BadRequest("no text: give prefix (and suffix) for one hole, or segments and holes")
    else:
        canvas = body.max_tokens or (LINE_CANVAS if body.mode == "line" else BLOCK_CANVAS)
        segments, holes = (body.prefix, body.suffix), (Hole(canvas),)
    try:
        request = InfillRequest(segments=segments, holes=holes)
    except RequestError as exc:
        raise BadRequest(str(exc)) from None
    return Job(request=request, sampler=body.sampler.to_config(), seed=body.seed, canvases=body.max_canvases,
               stop=_line_ended if body.mode == "line" else None)


def _line_ended(text: str) -> bool:
    """Line mode continues canvas after canvas only until the line ends."""
    return "\n" in text


class TokenOut(BaseModel):
    text: str
    confidence: float | None = Field(description="the probability the token was committed with (null: unknown)")


class Timings(BaseModel):
    queue_ms: float = Field(description="waiting for a batch")
    encode_ms: float
    denoise_ms: float
    total_ms: float = Field(description="received to answered, on the replica")


class InfillResponse(BaseModel):
    api_version: Literal["1"] = API_VERSION
    middle: str = Field(description="the first hole's text (pad/EOS cut)")
    middles: list[str]
    tokens: list[list[TokenOut]] = Field(description="per hole, each token with its commit probability")
    steps: int
    canvas_tokens: int
    timings: Timings
    model: str
    replica: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "unhealthy"]
    model: str
    replica: str
    stats: dict = Field(default_factory=dict, description="this replica's counters (batches, cancellations)")
    actor: str | None = Field(None, description="the Ray actor serving as this replica (under Ray Serve)")
    problem: str | None = None
