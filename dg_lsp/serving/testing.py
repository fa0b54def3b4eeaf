"""Test doubles for the serving path that must live where Ray's workers can import them.

`HeldBatcher` holds every batch, before the engine runs it, while the file named by $DG_LSP_HOLD_FILE
exists; while it holds, it keeps a marker file beside it, `<hold file>.<replica's actor name>`, holding
that replica's requests in flight as JSON. A test creates the hold file, sends requests, reads the markers
to see where they wait (Serve's router sends a health probe to the least busy replica, so /v1/health cannot
show the busy one), acts (kills that replica, lets more requests queue into one batch), then removes the
hold file: nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dg_lsp.serving.batcher import Batcher, Job, Reply

HOLD_ENV = "DG_LSP_HOLD_FILE"
HOLD_LIMIT_S = 120.0  # a test that forgets its file fails slowly instead of hanging forever


class HeldBatcher(Batcher):
    def run(self, jobs: list[Job]) -> list[Reply | Exception]:
        hold = os.environ.get(HOLD_ENV)
        if hold and os.path.exists(hold):
            import ray

            actor = ray.get_runtime_context().get_actor_name() or f"pid{os.getpid()}"
            marker = Path(f"{hold}.{actor}")
            deadline = time.monotonic() + HOLD_LIMIT_S
            while os.path.exists(hold) and time.monotonic() < deadline:
                marker.write_text(json.dumps({"actor": actor, "in_flight": self.stats.in_flight}))
                time.sleep(0.01)
            marker.unlink(missing_ok=True)
        return super().run(jobs)


def held(hold: Path) -> list[dict]:
    """What each holding replica's marker says (replicas write them while `hold` exists)."""
    out = []
    for marker in hold.parent.glob(hold.name + ".*"):
        try:
            out.append(json.loads(marker.read_text()))
        except (OSError, ValueError):  # being rewritten or just removed
            continue
    return out
