"""The remote backend (`backend: "remote"`): completions from a model served elsewhere, over HTTP.

`remote.api` picks the protocol:
- `dg`: our infill API, version 1 (docs/serving.md; `dg-lsp serve` on Ray Serve). `load` checks
  GET /v1/health and reads GET /v1/model (the engine's describe(), with its context length); `complete`
  is one POST /v1/infill.
- `openai`: an OpenAI-compatible server such as vLLM serving DiffusionGemma (dg_lsp.openai_compat).

The calls, their cancellation and their retries are dg_lsp.remote_http's. Every failure is a `RemoteError`
(an `EngineError`): the server answers that completion empty, logs the message (which names remote.url),
and the next request tries again. A failed `load` is shown to the user like any model load failure.
What the remote cannot do here: count tokens exactly (no tokenizer endpoint: estimated from the length),
score tokens (confidence hints), stream a long block canvas by canvas (the text comes back whole).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import urllib.parse
from typing import Mapping

from dg_lsp.backend import CancelCheck, Partial, Progress, StopCheck
from dg_lsp.engine.errors import ConfigError
from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig
from dg_lsp.openai_compat import OpenAIApi
from dg_lsp.options import is_http_url
from dg_lsp.remote_http import HttpClient, RemoteError, RemoteUnavailable, Sleep, sleep_polling

TOKEN_ENV = "DG_LSP_REMOTE_TOKEN"
# No tokenizer over the wire, so tokens are estimated from characters. Code runs about 3 to 4 characters a
# token; 3 errs towards more tokens, so a window cut with it fits the remote's context.
CHARS_PER_TOKEN = 3.0


class RemoteUnsupported(RemoteError):
    """Something this backend cannot do over the wire."""


def check_remote(url: str | None, api: str) -> str | None:
    """What is wrong with the remote options (naming the key), or None."""
    if url is None:
        return "backend remote needs remote.url: expected an http:// or https:// URL such as http://gpu-box:8000"
    if not is_http_url(url):
        return f"remote.url {url!r} is invalid: expected an http:// or https:// URL with a host and no query"
    if api not in ("dg", "openai"):
        return f"remote.api {api!r} is invalid: expected dg or openai"
    return None


def read_token(token_file: str | None, environ: Mapping[str, str]) -> str | None:
    """The bearer token: remote.tokenFile's text (stripped), else $DG_LSP_REMOTE_TOKEN, else None."""
    if token_file is None:
        return environ.get(TOKEN_ENV, "").strip() or None
    try:
        with open(os.path.expanduser(token_file), encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise ConfigError(f"remote.tokenFile {token_file!r} cannot be read ({exc.strerror or exc}): expected a "
                          "file holding the bearer token") from None
    if not token:
        raise ConfigError(f"remote.tokenFile {token_file!r} is empty: expected the bearer token")
    return token


def sampler_fields(sampler: SamplerConfig) -> dict:
    """The sampler settings that differ from the defaults: the remote applies the same defaults, and a
    server one version apart still accepts a request that leaves out fields it does not know."""
    default = SamplerConfig()
    return {f.name: getattr(sampler, f.name) for f in dataclasses.fields(sampler)
            if getattr(sampler, f.name) != getattr(default, f.name)}


class DgApi:
    """Our HTTP infill API, version 1 (the contract in docs/serving.md)."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client

    def check(self) -> dict:
        health = self.client.call("GET", "/v1/health")
        info = {"model": health.get("model")} if isinstance(health, dict) else {}
        model = self.client.call("GET", "/v1/model")
        if isinstance(model, dict):
            info |= model
        return info

    @staticmethod
    def body(request: InfillRequest, sampler: SamplerConfig, seed: int, canvases: int) -> dict:
        """One hole to fill goes as prefix/suffix with its canvas as max_tokens; anything else (several
        holes, a rewrite) as segments and holes. Several canvases are a block continuing."""
        body = {"mode": "block" if canvases > 1 else "line", "max_canvases": canvases,
                "sampler": sampler_fields(sampler), "seed": seed}
        (first, *others) = request.holes
        if not others and not first.init:
            return body | {"prefix": request.prefix, "suffix": request.suffix, "max_tokens": first.canvas}
        return body | {"segments": list(request.segments),
                       "holes": [{"canvas": h.canvas, "init": h.init} for h in request.holes]}

    def complete(self, request: InfillRequest, sampler: SamplerConfig, cancel: CancelCheck | None, seed: int,
                 canvases: int) -> InfillResult:
        reply = self.client.call("POST", "/v1/infill", self.body(request, sampler, seed, canvases), cancel)
        middles = reply.get("middles") if isinstance(reply, dict) else None
        if not (isinstance(middles, list) and len(middles) == len(request.holes)
                and all(isinstance(m, str) for m in middles)):
            raise RemoteError(f"{self.client.where} answered POST /v1/infill without {len(request.holes)} "
                              f"middles: expected the dg infill API version 1 (got {str(reply)[:200]})")
        timings = reply.get("timings") if isinstance(reply.get("timings"), dict) else {}
        return InfillResult(texts=tuple(middles), steps=int(_number(reply.get("steps"))),
                            canvas_tokens=int(_number(reply.get("canvas_tokens"))),
                            encode_ms=_number(timings.get("encode_ms")), denoise_ms=_number(timings.get("denoise_ms")),
                            timings={k: _number(v) for k, v in timings.items()},
                            confidences=_confidences(reply.get("tokens"), len(middles)))


def _confidences(tokens: object, holes: int) -> tuple[tuple[float, ...], ...]:
    """Each hole's token confidences from the reply's `tokens`; empty (not tracked) unless every one is a
    number, as the engine leaves them out rather than guessing."""
    if not (isinstance(tokens, list) and len(tokens) == holes and all(isinstance(h, list) for h in tokens)):
        return ()
    values = [[t.get("confidence") if isinstance(t, dict) else None for t in hole] for hole in tokens]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for hole in values for v in hole):
        return ()
    return tuple(tuple(float(v) for v in hole) for hole in values)


def _number(value: object) -> float:
    """A number from the reply's bookkeeping fields; 0 where the remote left one out (it is only reported)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class RemoteBackend:
    """`InfillBackend` over HTTP. `sleep` and `rng` are injectable (tests record the back-off)."""

    def __init__(self, url: str | None, api: str = "dg", model: str | None = None, token_file: str | None = None,
                 timeout_ms: float = 10_000.0, retries: int = 2, *, sleep: Sleep = sleep_polling,
                 rng: random.Random | None = None, environ: Mapping[str, str] = os.environ) -> None:
        self.url, self.api_name, self.model = url, api, model
        self.token_file, self.timeout_ms, self.retries = token_file, timeout_ms, retries
        self._sleep, self._rng, self._environ = sleep, rng or random.Random(), environ
        self._api: DgApi | OpenAIApi | None = None
        self._info: dict = {}
        self.state = "not connected"  # "ok", or why the last call failed

    def load(self, progress: Progress | None = None) -> None:
        if (problem := check_remote(self.url, self.api_name)) is not None:
            raise ConfigError(problem)
        client = HttpClient(self.url, read_token(self.token_file, self._environ), self.timeout_ms / 1000.0,
                            self.retries, self._sleep, self._rng)
        api = DgApi(client) if self.api_name == "dg" else OpenAIApi(client, self.model)
        if progress:
            progress(f"connecting to {self.url}", 0, 1)
        try:
            self._info = api.check()
        except RemoteError as exc:
            self.state = f"unreachable: {exc}" if isinstance(exc, RemoteUnavailable) else f"error: {exc}"
            raise
        self._api, self.state = api, "ok"
        if progress:
            progress(f"connected to {self.url}", 1, 1)

    def complete(self, request: InfillRequest, sampler: SamplerConfig, cancel: CancelCheck | None = None,
                 seed: int = 0, canvases: int = 1, stop: StopCheck | None = None,
                 partial: Partial | None = None) -> InfillResult:
        """The remote fills the request; a block continues there (`canvases`), its stop rule is applied by
        the caller's post-processing, and `partial` hears nothing: the text comes back whole."""
        if self._api is None:
            raise RemoteUnavailable(f"remote.url {self.url} was never reached: the backend is not loaded")
        try:
            result = self._api.complete(request, sampler, cancel, seed, canvases)
        except RemoteError as exc:
            self.state = f"unreachable: {exc}" if isinstance(exc, RemoteUnavailable) else f"error: {exc}"
            raise
        self.state = "ok"
        return result

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)  # an estimate: see CHARS_PER_TOKEN

    def score(self, text: str, start: int, end: int) -> list[tuple[int, int, float]]:
        raise RemoteUnsupported("confidence hints need token probabilities, which backend remote does not "
                                "get: set hints.enable to false, or use backend engine")

    def context_limit(self) -> int | None:
        context = self._info.get("context")
        return context if isinstance(context, int) and not isinstance(context, bool) and context > 0 else None

    def describe(self) -> dict:
        """The remote model's own description, marked as remote: `device` names where it runs (the status
        line shows it), `remote` the state of the last call."""
        where = urllib.parse.urlsplit(self.url or "").netloc.rsplit("@", 1)[-1] or "unset"
        info = dict(self._info)
        device = info.get("device")
        info.update({"model": str(info.get("model") or self.model or "remote"),
                     "device": f"{device} at {where}" if device else f"remote at {where}",
                     "kernels": info.get("kernels", "remote"), "backend": "remote", "api": self.api_name,
                     "url": self.url, "remote": self.state})
        if self.context_limit() is None:
            info.pop("context", None)
        return info
