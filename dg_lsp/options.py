"""Server options: nested dataclasses, structured from `initializationOptions` and
`workspace/didChangeConfiguration` settings.

Keys arrive in camelCase (`lineCanvas`); snake_case is accepted too. Each leaf is structured by a strict
cattrs converter (no `"false"` -> True, no 3.7 -> 3) and then checked against the range in its field's
metadata. A bad or unknown key produces one message naming the key, the value and what was expected, and
only that key falls back to its default: the rest of the options still apply.
"""

from __future__ import annotations

import dataclasses
import typing
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import cattrs

from dg_lsp.engine.request import MAX_CANVAS, SamplerConfig


def opt(default: Any, expected: str, check: Callable[[Any], bool] = lambda v: True) -> Any:
    """A field with a default, a predicate, and the words for what the predicate expects."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"expected": expected, "check": check})
    return field(default=default, metadata={"expected": expected, "check": check})


def _canvas(default: int) -> Any:
    return opt(default, f"an integer 1..{MAX_CANVAS}", lambda v: 1 <= v <= MAX_CANVAS)


@dataclass
class ModelOptions:
    path: str | None = opt(None, "a checkpoint directory, a Hugging Face repo id org/name[@revision] in the local "
                              "cache, a cache folder models--org--name, or null for the embedded model")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N",
                      lambda v: v in ("auto", "cpu", "cuda", "mps") or v.startswith("cuda:"))
    dtype: str | None = opt(None, "float32, bfloat16, float16 or null",
                            lambda v: v in (None, "float32", "bfloat16", "float16"))
    family: str | None = opt(None, "a family name (dream, open-dcoder, llada, dg, diffusion-gemma) or null to "
                                   "read config.json")
    quantize: str | None = opt(None, "int8 or null", lambda v: v in (None, "int8"))
    # context K/V kept between requests (engine.context_cache): auto = approximate for bidirectional families
    context_reuse: Literal["auto", "exact", "approximate"] = opt("auto", "one of auto, exact, approximate")


@dataclass
class SamplerOptions:
    steps: int = opt(8, "an integer 1..1024", lambda v: 1 <= v <= 1024)
    confidence: Literal["max_prob", "margin", "entropy", "random"] = opt(
        "max_prob", "one of max_prob, margin, entropy, random")
    commit: Literal["schedule", "threshold", "renoise"] = opt("schedule", "one of schedule, threshold, renoise")
    schedule: Literal["even", "dream"] = opt("even", "even or dream")
    threshold: float = opt(0.9, "a number in (0, 1]", lambda v: 0.0 < v <= 1.0)
    temperature: float = opt(0.0, "a number in [0, 10]", lambda v: 0.0 <= v <= 10.0)
    top_p: float = opt(1.0, "a number in (0, 1]", lambda v: 0.0 < v <= 1.0)
    seed: int = opt(0, "an integer >= 0", lambda v: v >= 0)
    halt_when_stable: bool = opt(True, "true or false")
    ends_in_order: bool = opt(True, "true or false")  # pad/EOS commit only after the token to their left
    block_length: int = opt(0, "an integer 0..4096 (0: one block)", lambda v: 0 <= v <= 4096)
    # checkpoints with expand/delete tokens (DreamOn): a hole's canvas grows to at most max_canvas positions,
    # through at most expand_budget expansions (0: max_canvas); other checkpoints ignore both
    max_canvas: int = opt(64, "an integer 1..4096", lambda v: 1 <= v <= 4096)
    expand_budget: int = opt(0, "an integer 0..4096 (0: maxCanvas)", lambda v: 0 <= v <= 4096)
    # "probe": a completion's canvas (lineCanvas / blockCanvas) is the longest one, cut to the length the
    # model's first forward expects (engine.length); "fixed": as configured
    canvas_length: Literal["fixed", "probe"] = opt("fixed", "fixed or probe")
    # DiffusionGemma's entropy-bound sampler; null: the checkpoint's generation defaults
    max_steps: int | None = opt(None, "null or an integer 1..1024", lambda v: v is None or 1 <= v <= 1024)
    entropy_bound: float | None = opt(None, "null or a number >= 0", lambda v: v is None or v >= 0)
    temperature_min: float | None = opt(None, "null or a number in (0, 10]", lambda v: v is None or 0 < v <= 10)
    temperature_max: float | None = opt(None, "null or a number in (0, 10]", lambda v: v is None or 0 < v <= 10)
    stability_threshold: int | None = opt(None, "null or an integer 0..1024", lambda v: v is None or 0 <= v <= 1024)
    confidence_threshold: float | None = opt(None, "null or a number >= 0", lambda v: v is None or v >= 0)


@dataclass
class InlineOptions:
    """Cursor completions: ghost text (`textDocument/inlineCompletion`) and completion items."""

    enable: bool = opt(True, "true or false")
    completion_items: bool = opt(True, "true or false")  # also answer textDocument/completion
    line_canvas: int = _canvas(16)
    block_canvas: int = _canvas(48)
    max_lines: int = opt(12, "an integer 1..200", lambda v: 1 <= v <= 200)
    # a completion longer than its canvas continues canvas after canvas (each one joins the prefix) until
    # its mode's stop rule ends it (a line: its statement's end, two canvases at most; a block: its dedent),
    # an end token, maxLines, or this many canvases
    max_canvases: int = opt(4, "an integer 1..32", lambda v: 1 <= v <= 32)
    # automatic triggers (typing) wait this long before the model starts, so that a burst of keystrokes
    # starts only its last request; explicitly invoked completions never wait
    debounce_ms: float = opt(20.0, "a number of milliseconds in [0, 2000]", lambda v: 0.0 <= v <= 2000.0)
    # after an item is accepted (its `dg-lsp.accepted` command), compute the completion at the new cursor
    # in idle time, so the next request there is a cache hit
    speculate: bool = opt(True, "true or false")


@dataclass
class RewriteOptions:
    enable: bool = opt(True, "true or false")
    strength: float = opt(0.5, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)
    extra_canvas: int = opt(8, "an integer 0..1024", lambda v: 0 <= v <= 1024)  # room to grow beyond the selection
    max_chars: int = opt(8000, "an integer 1..1000000", lambda v: 1 <= v <= 1_000_000)


@dataclass
class HolesOptions:
    enable: bool = opt(True, "true or false")
    marker: str = opt("<FILL>", "a non-empty string without line breaks",
                      lambda v: bool(v) and "\n" not in v and "\r" not in v)
    canvas: int = _canvas(24)
    max_holes: int = opt(16, "an integer 1..64", lambda v: 1 <= v <= 64)


@dataclass
class HintsOptions:
    """Confidence hints: after an edit settles, the edited lines' tokens the model finds unlikely become
    hint diagnostics with a quick fix (a rewrite of the token)."""

    enable: bool = opt(False, "true or false")
    threshold: float = opt(0.01, "a number in (0, 1)", lambda v: 0.0 < v < 1.0)  # flag tokens below this probability
    max_file_chars: int = opt(100_000, "an integer 1..10000000", lambda v: 1 <= v <= 10_000_000)
    debounce_ms: float = opt(500.0, "a number of milliseconds in [0, 10000]", lambda v: 0.0 <= v <= 10_000.0)


@dataclass
class ContextOptions:
    budget: int = opt(1024, "an integer 16..32768 (tokens of prefix + suffix + other files)",
                      lambda v: 16 <= v <= 32768)
    suffix_share: float = opt(0.25, "a number in [0, 0.9]", lambda v: 0.0 <= v <= 0.9)
    other_documents: bool = opt(True, "true or false")
    # tokens of the window kept for other open documents; never more than half of `budget`, and when the
    # model's context shortens the window this part shrinks first
    other_files_budget: int = opt(256, "an integer 0..16384 (tokens)", lambda v: 0 <= v <= 16384)
    chars_per_token: float = opt(3.5, "a number in [1, 16]", lambda v: 1.0 <= v <= 16.0)


@dataclass
class CacheOptions:
    size: int = opt(256, "an integer 0..100000 (0 turns the cache off)", lambda v: 0 <= v <= 100_000)


@dataclass
class FakeOptions:
    """The deterministic test backend (`backend: "fake"`)."""

    step_delay_ms: float = opt(0.0, "a number of milliseconds in [0, 10000]", lambda v: 0.0 <= v <= 10_000.0)
    load_delay_ms: float = opt(0.0, "a number of milliseconds in [0, 60000]", lambda v: 0.0 <= v <= 60_000.0)
    responses: dict[str, str] = opt({}, "an object mapping text before a hole to its fill")
    record_path: str | None = opt(None, "a file path or null")  # each request it gets, appended as a JSON line
    unlikely: list[str] = opt([], "a list of strings the fake scores as unlikely (confidence hints)")


def is_http_url(value: Any) -> bool:
    """An absolute http(s) URL with a host, a valid port, no query or fragment (the base the API paths go
    under) and no user:password (it would show in messages: the token goes in remote.tokenFile)."""
    if not isinstance(value, str):
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment
            and parts.username is None)


@dataclass
class RemoteOptions:
    """A model served elsewhere (`backend: "remote"`, dg_lsp.remote): our HTTP infill API (`dg-lsp serve`)
    or an OpenAI-compatible server (vLLM)."""

    url: str | None = opt(None, "an http:// or https:// URL such as http://gpu-box:8000 (no query, fragment or "
                                "user:password)",
                          lambda v: v is None or is_http_url(v))
    api: Literal["dg", "openai"] = opt("dg", "dg (the dg-lsp infill API) or openai (an OpenAI-compatible server)")
    # the model name the OpenAI-compatible server serves (its GET /v1/models); null: the first one listed
    model: str | None = opt(None, "a model name served by the remote (GET /v1/models) or null",
                            lambda v: v is None or bool(v.strip()))
    token_file: str | None = opt(None, "a file path or null (then DG_LSP_REMOTE_TOKEN, if set)")
    timeout_ms: float = opt(10_000.0, "a number of milliseconds in [100, 600000]", lambda v: 100.0 <= v <= 600_000.0)
    # attempts after the first, only for connection errors, 429 and 5xx
    retries: int = opt(2, "an integer 0..10", lambda v: 0 <= v <= 10)


@dataclass
class Options:
    backend: Literal["engine", "fake", "remote"] = opt("engine", "engine, fake or remote")
    model: ModelOptions = field(default_factory=ModelOptions)
    sampler: SamplerOptions = field(default_factory=SamplerOptions)
    inline: InlineOptions = field(default_factory=InlineOptions)
    rewrite: RewriteOptions = field(default_factory=RewriteOptions)
    holes: HolesOptions = field(default_factory=HolesOptions)
    hints: HintsOptions = field(default_factory=HintsOptions)
    context: ContextOptions = field(default_factory=ContextOptions)
    cache: CacheOptions = field(default_factory=CacheOptions)
    fake: FakeOptions = field(default_factory=FakeOptions)
    remote: RemoteOptions = field(default_factory=RemoteOptions)

    def sampler_config(self) -> SamplerConfig:
        """The engine's sampler settings (only the fields this engine version has)."""
        values = dataclasses.asdict(self.sampler) | {"strength": self.rewrite.strength}
        known = {f.name for f in dataclasses.fields(SamplerConfig)}
        return SamplerConfig(**{k: v for k, v in values.items() if k in known})

    def backend_key(self) -> tuple:
        """What a backend is built from: when it changes, the model is reloaded."""
        fake = (self.fake.step_delay_ms, self.fake.load_delay_ms, tuple(sorted(self.fake.responses.items())),
                self.fake.record_path, tuple(self.fake.unlikely))
        return (self.backend, self.model.path, self.model.device, self.model.dtype, self.model.quantize,
                self.model.family, self.model.context_reuse,
                fake if self.backend == "fake" else None,
                dataclasses.astuple(self.remote) if self.backend == "remote" else None)


# --- structuring -----------------------------------------------------------------------------------------

def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(str, _strict_str)
    return conv


_CONVERTER = _make_converter()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _structure(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
    defaults = cls()
    if raw is None:
        return defaults
    if not isinstance(raw, dict):
        problems.append(f"option {path or 'options'} = {_short(raw)} is invalid: expected an object; "
                        "using the defaults")
        return defaults
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    by_key = {camel(name): name for name in fields} | {name: name for name in fields}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = by_key.get(key) if isinstance(key, str) else None
        where = f"{path}.{key}" if path else str(key)
        if name is None:
            known = ", ".join(camel(n) for n in fields)
            problems.append(f"unknown option {where}: expected one of {known}")
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _structure(kind, value, where, problems)
            continue
        meta = fields[name].metadata
        default = getattr(defaults, name)
        try:
            parsed = _CONVERTER.structure(value, kind)
            ok = meta.get("check", lambda v: True)(parsed)
        except Exception:  # noqa: BLE001 - any structuring failure means "not the expected type"
            ok = False
        if not ok:
            problems.append(f"option {where} = {_short(value)} is invalid: expected {meta.get('expected', kind)}; "
                            f"using the default {default!r}")
            continue
        values[name] = parsed
    return dataclasses.replace(defaults, **values)


def parse_options(raw: Any) -> tuple[Options, list[str]]:
    """Options from a JSON-like object, with one message per bad key (each naming the key)."""
    problems: list[str] = []
    options = _structure(Options, raw, "", problems)
    return options, problems


def settings_section(settings: Any) -> Any:
    """The dg-lsp part of `workspace/didChangeConfiguration` settings (clients nest it under a section)."""
    if isinstance(settings, dict):
        for key in ("dg-lsp", "dgLsp", "dg_lsp"):
            if key in settings:
                return settings[key]
    return settings
