"""Serving the engine over HTTP: the infill API (api, schemas), the engine side that batches requests
(batcher), and the Ray Serve application with its builder (app) and `dg-lsp serve` (serve_cmd).

Only `app` and `serve_cmd` import Ray, so the API can be built and tested without it (batcher.LocalService).
"""
