"""What callers ask the engine for, and what they get back. Plain data, no torch: the server imports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dg_lsp.engine.errors import RequestError

MAX_CANVAS = 4096  # per hole; far above any editor use, low enough that a typo cannot allocate gigabytes

Confidence = Literal["max_prob", "margin", "entropy", "random"]
Commit = Literal["schedule", "threshold", "renoise"]
Schedule = Literal["even", "dream"]
CanvasLength = Literal["fixed", "probe"]


@dataclass(frozen=True)
class Hole:
    """One span to fill. `canvas` is its length in tokens; `init` is existing text to rewrite ("" = fill)."""

    canvas: int
    init: str = ""


@dataclass(frozen=True)
class InfillRequest:
    """Text around one or more holes: segments[0] | hole 0 | segments[1] | ... | hole n-1 | segments[n].

    A cursor completion is one hole between a prefix and a suffix; "fill holes" has several holes and the
    code between them; "rewrite selection" is one hole whose `init` is the selected text.
    """

    segments: tuple[str, ...]
    holes: tuple[Hole, ...]

    def __post_init__(self) -> None:
        if not self.holes:
            raise RequestError("infill request has no hole: expected at least one")
        if len(self.segments) != len(self.holes) + 1:
            raise RequestError(
                f"infill request has {len(self.segments)} text segments for {len(self.holes)} holes: "
                f"expected {len(self.holes) + 1}"
            )
        for i, hole in enumerate(self.holes):
            if not isinstance(hole.canvas, int) or not 1 <= hole.canvas <= MAX_CANVAS:
                raise RequestError(f"hole {i}: canvas length {hole.canvas!r} is out of range: expected 1..{MAX_CANVAS}")
        if not any(self.segments) and not any(h.init for h in self.holes):
            raise RequestError("infill request has empty prefix and suffix: expected some text around the hole")

    @classmethod
    def at_cursor(cls, prefix: str, suffix: str, canvas: int) -> "InfillRequest":
        return cls(segments=(prefix, suffix), holes=(Hole(canvas),))

    @classmethod
    def rewrite(cls, prefix: str, selection: str, suffix: str, canvas: int) -> "InfillRequest":
        return cls(segments=(prefix, suffix), holes=(Hole(canvas, init=selection),))

    @property
    def prefix(self) -> str:
        return self.segments[0]

    @property
    def suffix(self) -> str:
        return self.segments[-1]


@dataclass(frozen=True)
class SamplerConfig:
    """How the denoising loop commits tokens. Temperature 0 takes the argmax path and needs no generator."""

    steps: int = 8
    confidence: Confidence = "max_prob"
    commit: Commit = "schedule"
    schedule: Schedule = "even"  # even: LLaDA's equal split per step; dream: Dream's timestep schedule
    threshold: float = 0.9  # commit="threshold": every masked position above this probability commits
    temperature: float = 0.0
    top_p: float = 1.0
    strength: float = 0.5  # rewrite: share of the existing tokens re-noised before denoising
    # commit every remaining position once a step changes no proposal (the canvas has stopped moving)
    halt_when_stable: bool = True
    # pad/EOS commit only after the position to their left (see engine.sampler.held_back_ends); off = the
    # plain confidence order of the Dream and LLaDA reference loops
    ends_in_order: bool = True
    # semi-autoregressive blocks (LLaDA's block_length): the canvas is decoded left to right in blocks of
    # this many positions, each with its share of the steps; commits happen only in the current block.
    # 0: the whole canvas is one block
    block_length: int = 0
    # variable-length checkpoints (DreamOn's expand/delete tokens, engine.sampler.resize_hole): a hole's canvas
    # grows to at most this many positions (DreamOn's max_gen_len, 64 in its eval), through at most
    # `expand_budget` expansions per hole (0: max_canvas, as DreamOn's eval sets it)
    max_canvas: int = 64
    expand_budget: int = 0
    # "probe": each fill hole's canvas is the longest allowed, and one forward at that length picks the
    # length the model expects (engine.length); "fixed": the canvas as the request gives it
    canvas_length: CanvasLength = "fixed"
    # DiffusionGemma's entropy-bound sampler (engine.gemma_sampler); None: the checkpoint's generation default
    max_steps: int | None = None  # denoising steps per canvas at most (reference: 48)
    entropy_bound: float | None = None  # accepted positions' summed entropy stays under this (0.1)
    temperature_min: float | None = None  # temperature at the last step (0.4) ...
    temperature_max: float | None = None  # ... and at the first (0.8)
    stability_threshold: int | None = None  # steps the argmax canvas must repeat before it stops (1)
    confidence_threshold: float | None = None  # ... with its mean entropy below this (0.005)

    def __post_init__(self) -> None:
        checks = [
            ("steps", self.steps, isinstance(self.steps, int) and 1 <= self.steps <= 1024, "an integer 1..1024"),
            ("confidence", self.confidence, self.confidence in ("max_prob", "margin", "entropy", "random"),
             "one of max_prob, margin, entropy, random"),
            ("commit", self.commit, self.commit in ("schedule", "threshold", "renoise"),
             "one of schedule, threshold, renoise"),
            ("schedule", self.schedule, self.schedule in ("even", "dream"), "even or dream"),
            ("threshold", self.threshold, 0.0 < self.threshold <= 1.0, "a number in (0, 1]"),
            ("temperature", self.temperature, 0.0 <= self.temperature <= 10.0, "a number in [0, 10]"),
            ("top_p", self.top_p, 0.0 < self.top_p <= 1.0, "a number in (0, 1]"),
            ("strength", self.strength, 0.0 <= self.strength <= 1.0, "a number in [0, 1]"),
            ("block_length", self.block_length, isinstance(self.block_length, int) and 0 <= self.block_length <= 4096,
             "an integer 0..4096 (0: one block)"),
            ("canvas_length", self.canvas_length, self.canvas_length in ("fixed", "probe"), "fixed or probe"),
            ("max_canvas", self.max_canvas, isinstance(self.max_canvas, int) and 1 <= self.max_canvas <= 4096,
             "an integer 1..4096"),
            ("expand_budget", self.expand_budget, isinstance(self.expand_budget, int)
             and 0 <= self.expand_budget <= 4096, "an integer 0..4096 (0: max_canvas)"),
            ("max_steps", self.max_steps, self.max_steps is None or (isinstance(self.max_steps, int)
                                                                     and 1 <= self.max_steps <= 1024),
             "null or an integer 1..1024"),
            ("entropy_bound", self.entropy_bound, self.entropy_bound is None or self.entropy_bound >= 0,
             "null or a number >= 0"),
            ("temperature_min", self.temperature_min, self.temperature_min is None or 0 < self.temperature_min <= 10,
             "null or a number in (0, 10]"),
            ("temperature_max", self.temperature_max, self.temperature_max is None or 0 < self.temperature_max <= 10,
             "null or a number in (0, 10]"),
            ("stability_threshold", self.stability_threshold, self.stability_threshold is None
             or (isinstance(self.stability_threshold, int) and 0 <= self.stability_threshold <= 1024),
             "null or an integer 0..1024"),
            ("confidence_threshold", self.confidence_threshold, self.confidence_threshold is None
             or self.confidence_threshold >= 0, "null or a number >= 0"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise RequestError(f"sampler setting {name}={value!r} is invalid: expected {expected}")


@dataclass(frozen=True)
class InfillResult:
    """The filled text of each hole (pad/EOS already cut), with what it cost."""

    texts: tuple[str, ...]
    steps: int  # denoising forwards run
    canvas_tokens: int  # canvas positions over all holes
    encode_ms: float = 0.0  # prefix/suffix encode (0 when the cache was reused entirely)
    denoise_ms: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    # per hole, one value per token of its text (pad/EOS cut, as `texts`): the probability the token had
    # under the denoising step that committed it (temperature 0: that step's max-prob). A rewrite's kept
    # token: the model's probability of it before denoising. Empty where not tracked (variable-length
    # canvases, DiffusionGemma)
    confidences: tuple[tuple[float, ...], ...] = ()
    token_ids: tuple[tuple[int, ...], ...] = ()  # per hole, the tokens `confidences` are of (same cut)

    @property
    def text(self) -> str:
        return self.texts[0]

    @property
    def total_ms(self) -> float:
        return self.encode_ms + self.denoise_ms
