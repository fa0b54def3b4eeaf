"""The remote backend's `openai` API: an OpenAI-compatible server (vLLM) serving DiffusionGemma.

Its completion endpoint (POST /v1/completions) continues a prompt and has no suffix field (vLLM rejects
`suffix`), so a hole goes through the model's own prompt format instead. DiffusionGemma is a Gemma-4
instruction model; the prompt is one Gemma-4 user turn that shows the code with the hole marked and asks for
exactly the missing text, then opens the model turn with an empty thought channel (thinking off, as
Gemma-4's template writes it for the 26B/31B models):

    <|turn>user
    {INSTRUCTION}

    {text before}<FILL_HERE>{text after}<turn|>
    <|turn>model
    <|channel>thought
    <channel|>

The server's tokenizer adds <bos>; generation stops at `<turn|>`. The reply is cut back to the middle
(`middle_from_reply`): a thought block, a Markdown fence, an echoed marker or an echo of the cursor line's
start are removed. Several holes are filled one request each, left to right, each seeing the fills before it.
"""

from __future__ import annotations

import re
import time

from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig
from dg_lsp.remote_http import CancelCheck, HttpClient, RemoteError, RemoteRejected

HOLE = "<FILL_HERE>"
END_OF_TURN = "<turn|>"
INSTRUCTION = (f"Complete the code. In the code below, {HOLE} marks a hole. Reply with exactly the text that "
               f"belongs in place of {HOLE}, nothing else: no explanation, no Markdown code fence, and none of "
               "the code before or after the hole. Reply with nothing if nothing is missing.")
REWRITE = "The hole held the text below; reply with it rewritten (fixed or improved, same purpose):"
# tokens of the prompt around the code (instruction and turn markers), counted generously: the window is
# cut to the model's context minus this
PROMPT_OVERHEAD_TOKENS = 128


def gemma_prompt(before: str, after: str, init: str = "") -> str:
    """The Gemma-4 turn that asks for the text between `before` and `after` (`init`: text to rewrite)."""
    rewrite = f"\n\n{REWRITE}\n{init}" if init else ""
    return (f"<|turn>user\n{INSTRUCTION}\n\n{before}{HOLE}{after}{rewrite}{END_OF_TURN}\n"
            "<|turn>model\n<|channel>thought\n<channel|>")


_THOUGHT = re.compile(r"<\|channel>.*?<channel\|>", re.DOTALL)
_FENCE = re.compile(r"^\s*```[^\n]*\n(.*?)(?:\n?```\s*)?$", re.DOTALL)


def middle_from_reply(reply: str, before: str, after: str) -> str:
    """The text for the hole from the model's reply."""
    text = reply.split(END_OF_TURN, 1)[0]  # servers that keep the stop string
    text = _THOUGHT.sub("", text)
    if (fence := _FENCE.match(text)) is not None:
        text = fence.group(1)
    text = text.replace(HOLE, "")
    line = before.rsplit("\n", 1)[-1]
    if line.strip() and text.lstrip(" \t").startswith(line.lstrip(" \t")):  # it repeated the line's start
        text = text.lstrip(" \t")[len(line.lstrip(" \t")):]
    elif line and not line.strip() and text.startswith(line):  # it repeated the indentation already there
        text = text[len(line):]
    if not after or after.startswith(("\n", "\r")):  # the line break after the hole is already there
        text = text.rstrip("\r\n")
    return text


class OpenAIApi:
    """POST /v1/completions with the Gemma-4 prompt; `check` reads GET /v1/models."""

    def __init__(self, client: HttpClient, model: str | None) -> None:
        self.client, self.model = client, model

    def check(self) -> dict:
        """The model card the server lists for `model` (the first one when `model` is None)."""
        listing = self.client.call("GET", "/v1/models")
        cards = [c for c in (listing.get("data") if isinstance(listing, dict) else None) or []
                 if isinstance(c, dict) and isinstance(c.get("id"), str)]
        if not cards:
            raise RemoteError(f"{self.client.where} lists no model (GET /v1/models): expected an OpenAI-compatible "
                              "server with a model loaded")
        ids = [c["id"] for c in cards]
        if self.model is None:
            self.model = ids[0]
        elif self.model not in ids:
            raise RemoteRejected(f"remote.model {self.model!r} is not served by {self.client.where}: "
                                 f"it serves {', '.join(ids)}")
        card = cards[ids.index(self.model)]
        limit = card.get("max_model_len")
        context = limit - PROMPT_OVERHEAD_TOKENS if isinstance(limit, int) and limit > PROMPT_OVERHEAD_TOKENS else None
        return {"model": self.model, "family": f"openai-compatible ({card.get('owned_by', 'unknown')})",
                "context": context}

    def body(self, prompt: str, max_tokens: int, sampler: SamplerConfig, seed: int) -> dict:
        """The request body: the documented completions fields only (vLLM's quickstart shape)."""
        return {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": sampler.temperature,
                "top_p": sampler.top_p, "seed": seed, "n": 1, "stream": False, "stop": [END_OF_TURN]}

    def complete(self, request: InfillRequest, sampler: SamplerConfig, cancel: CancelCheck | None, seed: int,
                 canvases: int) -> InfillResult:
        start, texts = time.perf_counter(), []
        for i, hole in enumerate(request.holes):
            before = "".join(seg + fill for seg, fill in zip(request.segments[:i], texts)) + request.segments[i]
            rest, later = request.segments[i + 1:], [h.init for h in request.holes[i + 1:]]
            after = "".join(seg + init for seg, init in zip(rest, later)) + rest[-1]  # later holes as they are
            # a block may run over several canvases locally; here the one reply may be that long
            max_tokens = hole.canvas * max(1, canvases)
            reply = self.client.call("POST", "/v1/completions",
                                     self.body(gemma_prompt(before, after, hole.init), max_tokens, sampler, seed),
                                     cancel)
            texts.append(middle_from_reply(_choice_text(reply, self.client.where), before, after))
        return InfillResult(texts=tuple(texts), steps=0, canvas_tokens=sum(h.canvas for h in request.holes),
                            denoise_ms=(time.perf_counter() - start) * 1000.0)


def _choice_text(reply: object, where: str) -> str:
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("text"), str):
        raise RemoteError(f"{where} answered POST /v1/completions without choices[0].text: expected an "
                          "OpenAI completion object")
    return choices[0]["text"]
