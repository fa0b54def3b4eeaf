"""The language server: state on a `DgServer`, thin handlers over the pure modules.

Handlers fetch a document snapshot, call pure functions (context, postprocess, edits), hand the infill to
the scheduler's worker and await it without blocking the loop, then convert to lsprotocol types.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
from typing import Any, Callable

from lsprotocol import types
from pygls.capabilities import ServerCapabilitiesBuilder, get_capability
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled
from pygls.lsp.server import LanguageServer

from dg_lsp.engine.errors import EngineError
from dg_lsp.engine.request import MAX_CANVAS, InfillRequest, InfillResult
from dg_lsp import convert, hints, tcp, transport
from dg_lsp.backend import InfillBackend, make_backend
from dg_lsp.completion_progress import CompletionProgress, asks_for_progress
from dg_lsp.context import (CursorContext, build_cursor_context, cache_key, canvas_limit_problems, canvas_room,
                            fit_request, other_files_tokens, word_start_at)
from dg_lsp.edit_commands import compute_edit, run_edit_command
from dg_lsp.hint_runs import HintRuns
from dg_lsp.lifecycle import Lifecycle
from dg_lsp.options import Options, parse_options, settings_section
from dg_lsp.postprocess import (Completion, as_item_edit, block_ended, continue_shown, line_ended, postprocess,
                                remember)
from dg_lsp.protocol import DgProtocol, strict_converter
from dg_lsp.remote_http import RemoteUnavailable
from dg_lsp.scheduler import BackendUnavailable, Cancelled, Job, Scheduler, Superseded
from dg_lsp.speculate import ACCEPTED_COMMAND, Accepted, Accepts, parse_accepted
from dg_lsp.text import UTF8, UTF16, UTF32, Document, DocumentStore, Position

__version__ = "0.1.0"
log = logging.getLogger(__name__)

STATUS = "dg/status"
STATS = "dg/stats"
_ENCODINGS = {types.PositionEncodingKind.Utf8: UTF8, types.PositionEncodingKind.Utf16: UTF16,
              types.PositionEncodingKind.Utf32: UTF32}


class DgServer(LanguageServer):
    """All server state lives here (documents, options, scheduler, shown completions)."""

    def __init__(self, backend_factory: Callable[[Options], InfillBackend] = make_backend) -> None:
        super().__init__("dg-lsp", __version__, protocol_cls=DgProtocol, converter_factory=strict_converter,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.backend_factory = backend_factory
        self.documents = DocumentStore()
        self.roots: list[str] = []  # workspace folder uris, for naming other files in the context
        self.options = Options()
        self.shown: dict[str, Any] = {}  # uri -> postprocess.Shown
        self.hint_runs = HintRuns(self)  # confidence hints: scoring after edits, what is published
        self.accepts = Accepts()  # accepted items whose didChange is still to come (dg_lsp/speculate.py)
        self.scheduler = Scheduler(cache_size=self.options.cache.size, on_computed=self._on_computed)
        self.model_state = "idle"
        self.problem: str | None = None  # a remote backend that stopped answering (remote_outage)
        self.model_info: dict = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._jobs_by_request: dict[Any, Job] = {}
        self._tokens = itertools.count(1)
        self._loaded_key: tuple | None = None  # backend options of the last load started
        self._load_task: asyncio.Task | None = None

    # --- capabilities of the client ---------------------------------------------------------------------
    def client_has(self, *path: str) -> bool:
        node: Any = getattr(self.protocol, "client_capabilities", None)
        for name in path:
            node = getattr(node, name, None)
            if node is None:
                return False
        return bool(node)

    # --- messages ---------------------------------------------------------------------------------------
    def show(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"dg-lsp: {message}"))

    def send_status(self) -> None:
        info = self.model_info
        self.protocol.notify(STATUS, {
            "model": info.get("model"), "device": info.get("device"), "kernels": info.get("kernels"),
            "quantize": info.get("quantize"), "state": self.model_state,
            "lastLatencyMs": self.scheduler.stats.last_latency_ms, "problem": self.problem,
        })

    def remote_outage(self, message: str | None) -> None:
        """A remote backend stopped answering (message) or answers again (None): told once each way."""
        if (message is None) == (self.problem is None):
            return
        self.problem = message
        self.show(f"dg-lsp: {message}; completions are empty until it answers" if message else
                  "dg-lsp: the remote model answers again", types.MessageType.Warning if message else
                  types.MessageType.Info)
        self.send_status()

    def _on_computed(self, latency_ms: float) -> None:  # worker thread
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.send_status)

    def report_server_error(self, error: Exception, source) -> None:
        log.warning("server error (%s): %s", getattr(source, "__name__", source), error)

    # --- options and the model --------------------------------------------------------------------------
    def apply_options(self, raw: Any) -> None:
        options, problems = parse_options(raw)
        for problem in problems:
            self.show(problem)
        self.options = options
        self.scheduler.cache.size = options.cache.size
        if not options.hints.enable:
            self.hint_runs.clear_all()
        if self._loaded_key is not None and options.backend_key() != self._loaded_key:
            self.start_load()
        else:
            self.check_limits()

    def context_limit(self) -> int | None:
        """The loaded model's context in tokens (the backend's `context_limit`); None while none is loaded
        or when the backend has no limit (the fake)."""
        limit = self.model_info.get("context") if self.model_state == "ready" else None
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    def check_limits(self) -> None:
        """Tell the user about canvas options the loaded model cannot hold (they are used shortened)."""
        if (limit := self.context_limit()) is not None:
            for problem in canvas_limit_problems(self.options, limit):
                self.show(problem)

    def start_load(self) -> asyncio.Task:
        """Queue a (re)load of the backend on the worker now, ahead of any later job, and follow it with
        work-done progress and status notifications in a task."""
        options = self.options
        self._loaded_key = options.backend_key()
        self.model_state, self.problem = "loading", None
        self.send_status()
        loop = asyncio.get_running_loop()
        token: list[str] = []  # set once the client has accepted the progress token
        latest: list[types.WorkDoneProgressReport] = []  # the last report, replayed once the token exists

        def report(message: str, done: int, total: int) -> None:
            pct = int(100 * done / total) if total else None
            latest[:] = [types.WorkDoneProgressReport(message=message, percentage=pct)]
            if token:
                self.work_done_progress.report(token[0], latest[0])

        def progress(message: str, done: int, total: int) -> None:  # worker thread
            loop.call_soon_threadsafe(report, message, done, total)

        loaded = self.scheduler.load(lambda: self.backend_factory(options), progress)
        self._load_task = asyncio.ensure_future(self._follow_load(options, loaded, token, latest))
        return self._load_task

    async def _follow_load(self, options: Options, loaded, token: list[str], latest: list) -> None:
        if self.client_has("window", "work_done_progress"):
            name = f"dg-lsp/load/{next(self._tokens)}"
            try:
                await self.work_done_progress.create_async(name)
                self.work_done_progress.begin(name, types.WorkDoneProgressBegin(
                    title="dg-lsp: loading model", percentage=0, cancellable=False))
                token.append(name)
                if latest:
                    self.work_done_progress.report(name, latest[0])
            except Exception:  # noqa: BLE001 - progress is a courtesy; the load goes on
                log.exception("work done progress create failed")
        try:
            self.model_info = await asyncio.wrap_future(loaded)
            self.model_state, end = "ready", f"loaded {self.model_info.get('model')} on {self.model_info.get('device')}"
            self.check_limits()
        except Exception as exc:  # noqa: BLE001 - told to the user; requests then answer empty
            self.model_state, self.model_info, end = "error", {}, f"model load failed: {exc}"
            remote = options.backend == "remote"
            where = f"the remote model at {options.remote.url}" if remote else options.model.path or "the embedded model"
            fix = "remote.url is fixed or the remote answers (a settings change retries)" if remote else \
                "model.path or model.device is fixed"
            self.show(f"could not load {where} ({type(exc).__name__}: {exc}); completions are off until {fix}",
                      types.MessageType.Error)
        if token:
            self.work_done_progress.end(token[0], types.WorkDoneProgressEnd(message=end))
        self.send_status()

    # --- running infills --------------------------------------------------------------------------------
    def cancel_request(self, msg_id: Any) -> None:
        job = self._jobs_by_request.pop(msg_id, None)
        if job is not None:
            self.scheduler.cancel(job)

    def make_job(self, lane: tuple, request: InfillRequest, debounce_ms: float = 0.0, other_chars: int = 0,
                 canvases: int = 1, stop: Callable[[str], bool] | None = None,
                 on_partial: Callable[[str], None] | None = None, speculative: bool = False) -> Job:
        """The scheduler job of `request`, its cache key from the request and the current options. The
        first `other_chars` characters of the request are other files' context (see `fit_request`)."""
        options = self.options
        budget, share, sampler = options.context.budget, options.context.suffix_share, options.sampler_config()
        other_tokens = other_files_tokens(options.context)
        settings = (options.backend_key(), sampler, options.sampler.seed, budget, share, other_chars, other_tokens,
                    canvases, options.inline.max_lines if canvases > 1 else None)
        return Job(lane=lane, request=request, sampler=sampler, seed=options.sampler.seed,
                   cache_key=cache_key(request, settings),
                   prepare=lambda backend, req: fit_request(req, backend.count_tokens, budget, share,
                                                            backend.context_limit(), other_chars, other_tokens),
                   not_before=time.monotonic() + debounce_ms / 1000.0, canvases=canvases, stop=stop,
                   on_partial=on_partial, low_priority=speculative, speculative=speculative)

    def cursor_job(self, lane: tuple, ctx: CursorContext, automatic: bool,
                   on_partial: Callable[[str, bool], None] | None = None, speculative: bool = False) -> Job:
        """The job of a completion at a cursor; one longer than its canvas continues canvas after canvas
        until its mode's stop rule ends it (docs/lsp.md, maxCanvases): a line at the end of its statement, a
        block at its dedent. `on_partial` hears the text so far and whether it goes on."""
        inline = self.options.inline
        debounce = inline.debounce_ms if automatic and not speculative else 0.0
        # a line longer than two canvases (32 tokens, ~120 characters by default) is rare in real code; more
        # would only let a confused model ramble on a line that never closes
        canvases = inline.max_canvases if ctx.mode == "block" else min(inline.max_canvases, 2)
        max_lines = inline.max_lines
        ended = block_ended if ctx.mode == "block" else line_ended

        def stop(text: str) -> bool:
            return ended(text, ctx, max_lines=max_lines)

        partial = None if on_partial is None else (lambda text: on_partial(text, not stop(text)))
        return self.make_job(lane, ctx.request(), debounce, len(ctx.extra), canvases, stop, partial, speculative)

    async def infill(self, lane: tuple, request: InfillRequest) -> InfillResult | None:
        return await self.run_job(self.make_job(lane, request))

    async def run_job(self, job: Job) -> InfillResult | None:
        """Run `job` on the worker, or join the run of an identical request (same cache key) already
        queued or running. None when a newer request on the same lane superseded it."""
        if self._loaded_key is None:  # a client that never sent `initialized`
            self.start_load()
        msg_id = self.protocol.msg_id
        if msg_id is not None:
            self._jobs_by_request[msg_id] = job
        self.scheduler.submit(job)
        try:
            return await asyncio.wrap_future(job.future)
        except Superseded:
            return None
        except asyncio.CancelledError:
            self.scheduler.cancel(job)
            raise
        except Cancelled as exc:
            raise JsonRpcRequestCancelled("request cancelled") from exc
        finally:
            if msg_id is not None:
                self._jobs_by_request.pop(msg_id, None)

    def cursor_context(self, doc: Document, offset: int, automatic: bool) -> CursorContext:
        """The context of a completion at `offset`: requests and speculations build it alike (one cache key)."""
        options = self.options
        others = self.documents.recent(doc.uri, 3) if options.context.other_documents else ()
        limit = self.context_limit()
        room = canvas_room(options.context, limit) if limit is not None else MAX_CANVAS
        return build_cursor_context(doc, offset, automatic=automatic, options=options.context,
                                    line_canvas=max(1, min(options.inline.line_canvas, room)),
                                    block_canvas=max(1, min(options.inline.block_canvas, room)), others=others,
                                    roots=self.roots)

    async def complete_at(self, kind: str, uri: str, position: types.Position, automatic: bool,
                          on_partial: Callable[[str, bool], None] | None = None
                          ) -> tuple[Document, Completion, int] | None:
        """The completion at a cursor: (snapshot, completion, start of the word being typed) or None.
        `kind` ("inline", "completion") names the lane: a request supersedes only older ones of its kind,
        and requests of either kind with the same context share one model run. `on_partial` hears a long
        block's text so far after each canvas and whether it goes on (worker thread)."""
        doc = self.documents.get(uri)
        if doc is None or not self.options.inline.enable:
            return None
        offset = doc.offset_at(Position(position.line, position.character))
        self.documents.viewed(uri, offset)
        if (typed := continue_shown(self.shown.get(uri), doc.text, offset)) is not None:
            return doc, typed, word_start_at(doc.text, offset, doc.line_starts[doc.line_at(offset)])
        ctx = self.cursor_context(doc, offset, automatic)
        try:
            result = await self.run_job(self.cursor_job((kind, uri), ctx, automatic, on_partial))
        except (EngineError, BackendUnavailable) as exc:
            log.info("no completion: %s", exc)
            if isinstance(exc, RemoteUnavailable):
                self.remote_outage(str(exc))
            return None
        except (JsonRpcException, asyncio.CancelledError):
            raise
        except Exception:  # noqa: BLE001 - a failing backend must not cost the reply
            log.exception("completion failed")
            return None
        if result is not None and self.problem is not None:
            self.remote_outage(None)
        current = self.documents.get(uri)
        if result is None or current is None or current.version != doc.version:
            return None
        completion = postprocess(result.text, ctx, max_lines=self.options.inline.max_lines)
        if completion is None:
            return None
        self.shown[uri] = remember(ctx, completion, doc.text)
        return doc, completion, ctx.word_start

    def accepted(self, accepted: Accepted) -> None:
        """The `dg-lsp.accepted` command: speculate at the end of the accepted text once the document has it."""
        if (offset := self.accepts.accepted(accepted, self.documents.get(accepted.uri))) is not None:
            self.speculate(accepted.uri, offset)

    def speculate(self, uri: str, offset: int) -> None:
        """Queue the completion an automatic inline request at `offset` would ask for, as a speculative job
        (it runs only while the worker is idle and gives way to any request): its result lands in the cache
        under the key that request computes. Nobody awaits it."""
        doc, inline = self.documents.get(uri), self.options.inline
        if doc is None or not (inline.enable and inline.speculate) or self.model_state != "ready":
            return
        if continue_shown(self.shown.get(uri), doc.text, offset) is not None:
            return  # the next request continues the shown completion without the model
        ctx = self.cursor_context(doc, offset, automatic=True)  # editors ask automatically after an accept
        self.scheduler.submit(self.cursor_job(("speculate", uri), ctx, True, speculative=True))

    # --- after an edit ------------------------------------------------------------------------------------
    def edited(self, uri: str, doc: Document, changes: list[tuple[int, int, str] | None]) -> None:
        """After a didChange: a change that brings an accepted item starts its speculation; the confidence
        hints the edit touched go, and its lines are scored once the edits settle (dg_lsp/hint_runs.py).
        `changes`: each change's (start line, end line, new text), None for the whole text."""
        if (offset := self.accepts.changed(doc)) is not None:
            self.speculate(uri, offset)
        self.hint_runs.edited(uri, doc, changes)

    def closed(self, uri: str) -> None:
        """After a didClose: forget what was kept for the document."""
        self.documents.close(uri)
        self.shown.pop(uri, None)
        self.accepts.closed(uri)
        self.hint_runs.closed(uri)

    async def complete_with_progress(self, token: types.ProgressToken | None, uri: str, position: types.Position,
                                     automatic: bool) -> tuple[Document, Completion, int] | None:
        """`complete_at("inline", ...)` reporting the text so far after each canvas on the client's work-done
        `token`, or on one the server creates for a client that asked (dg_lsp/completion_progress.py)."""
        name = None
        if token is None:
            caps = getattr(self.protocol, "client_capabilities", None)
            if not (self.client_has("window", "work_done_progress")
                    and asks_for_progress(getattr(caps, "experimental", None))):
                return await self.complete_at("inline", uri, position, automatic)
            name = f"dg-lsp/complete/{next(self._tokens)}"
        loop, report = asyncio.get_running_loop(), CompletionProgress(self.work_done_progress, token, name)
        try:
            return await self.complete_at("inline", uri, position, automatic,
                                          lambda text, more: loop.call_soon_threadsafe(report.partial, text, more))
        finally:
            report.end()


def build_server(backend_factory: Callable[[Options], InfillBackend] = make_backend) -> DgServer:
    server = DgServer(backend_factory)
    _register(server)
    return server


def _register(server: DgServer) -> None:  # noqa: C901 - one short handler per method
    @server.feature(types.INITIALIZE)
    def initialize(ls: DgServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        encoding = ServerCapabilitiesBuilder.choose_position_encoding(params.capabilities)
        ls.documents.encoding = _ENCODINGS.get(encoding, UTF16)
        ls.roots = [f.uri for f in params.workspace_folders or []] + ([params.root_uri] if params.root_uri else [])
        ls.apply_options(settings_section(params.initialization_options))

    @server.feature(types.INITIALIZED)
    def initialized(ls: DgServer, params: types.InitializedParams) -> None:
        if ls._loaded_key is None:
            ls.start_load()

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: DgServer, params: None) -> None:
        # blocks the loop until the worker ends (its job stops at the next denoising step, 2 s at most):
        # run off the loop, the running request's cancellation would race the shutdown reply
        ls.scheduler.stop(timeout=2.0)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: DgServer, params: types.DidChangeConfigurationParams) -> None:
        if params.settings is not None:
            ls.apply_options(settings_section(params.settings))

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: DgServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        automatic = params.context.trigger_kind == types.InlineCompletionTriggerKind.Automatic
        found = await ls.complete_with_progress(params.work_done_token, params.text_document.uri, params.position,
                                                automatic)
        if found is None:
            return types.InlineCompletionList(items=[])
        doc, completion, _ = found
        return convert.inline_items(doc, completion, ls.options.inline.speculate)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: DgServer, params: types.CompletionParams) -> types.CompletionList:
        if not ls.options.inline.completion_items:
            return types.CompletionList(is_incomplete=False, items=[])
        invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        found = await ls.complete_at("completion", params.text_document.uri, params.position, not invoked)
        if found is None:
            return types.CompletionList(is_incomplete=True, items=[])
        doc, completion, word_start = found
        return convert.completion_items(doc, as_item_edit(completion, word_start, doc.text))

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.RefactorRewrite, types.CodeActionKind.QuickFix],
        resolve_provider=True))
    def code_action(ls: DgServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            return []
        lazy_edit = "edit" in get_capability(ls.client_capabilities,
                                             "text_document.code_action.resolve_support.properties", [])
        rng, holes = params.range, ls.options.holes
        kinds = [kind for kind, ok in (("rewrite", ls.options.rewrite.enable and rng.start != rng.end),
                                       ("holes", holes.enable and holes.marker in doc.text)) if ok]
        fixes = (hints.quick_fixes(doc.uri, params.context.diagnostics, ls.protocol._converter, lazy_edit)
                 if ls.options.rewrite.enable else [])
        return fixes + convert.code_actions(doc.uri, ls.protocol._converter.unstructure(rng), kinds, lazy_edit)

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def resolve_code_action(ls: DgServer, action: types.CodeAction) -> types.CodeAction:
        data = action.data if isinstance(action.data, dict) else {}
        kind = data.get("kind")
        if kind not in ("rewrite", "holes"):
            raise JsonRpcInvalidParams(f"code action data kind={kind!r}: expected rewrite or holes")
        parsed = convert.parse_edit_args([data], ls.protocol._converter, need_range=kind == "rewrite")
        action.edit = await compute_edit(ls, kind, parsed.uri, parsed.range)
        return action

    @server.command(convert.REWRITE_COMMAND)
    async def rewrite_selection(ls: DgServer, *args: Any) -> types.WorkspaceEdit:
        return await run_edit_command(ls, "rewrite", "Rewrite selection", args, need_range=True)

    @server.command(convert.FILL_HOLES_COMMAND)
    async def fill_holes(ls: DgServer, *args: Any) -> types.WorkspaceEdit:
        return await run_edit_command(ls, "holes", "Fill holes", args, need_range=False)

    @server.command(ACCEPTED_COMMAND)
    def accepted(ls: DgServer, *args: Any) -> None:
        ls.accepted(parse_accepted(args))

    @server.feature(STATS)
    def stats(ls: DgServer, params: Any) -> dict:
        return {"received": ls.protocol.received, "replied": ls.protocol.replied, "documents": len(ls.documents),
                "pending": ls.scheduler.pending(), "cacheEntries": len(ls.scheduler.cache),
                "modelState": ls.model_state, "torchLoaded": "torch" in sys.modules,
                **ls.scheduler.stats.as_dict()}


def serve(args) -> int:
    level = logging.INFO if getattr(args, "log_file", None) else logging.WARNING
    logging.basicConfig(filename=getattr(args, "log_file", None), level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pygls").setLevel(logging.WARNING)  # pygls logs every message body at INFO
    limits = transport.Limits(getattr(args, "max_message_bytes", None) or transport.Limits.max_message_bytes,
                              getattr(args, "max_header_bytes", None) or transport.Limits.max_header_bytes)
    over_tcp, token = getattr(args, "tcp", False), None
    if over_tcp:
        token, problem = tcp.tcp_setup(args.host, getattr(args, "allow_remote", False),
                                       getattr(args, "token_file", None))
        if problem is not None:
            print(f"dg-lsp: {problem}", file=sys.stderr)
            return 2
    server = build_server()
    life = Lifecycle(server)  # orderly stop and exit code from EOF, `exit`, SIGTERM, SIGINT (docs/lsp.md)

    def start() -> None:
        if over_tcp:  # a fresh session per client; the model stays loaded between them (docs/lsp.md)
            keep = tcp.KeepLoaded(make_backend)
            tcp.TcpHost(lambda: life.watch(build_server(keep)), limits, token).run(args.host, args.port)
        else:
            transport.run_stdio(server, limits)

    return life.run(start)
