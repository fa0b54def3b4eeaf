"""CUDA graphs of one denoising step (canvas rows forward + fused LM-head epilogue), per canvas length.

A small model's denoising step is a few dozen kernel launches over a few dozen rows: on a GPU the launch
overhead, not the math, sets the latency. A captured graph replays all of them at once. Graphs need
fixed addresses, so each one owns static buffers: the canvas tokens and positions, a context K/V buffer
with spare capacity, and the number of valid context rows as a device tensor (the attention kernel reads
it at run time, so one graph serves every context length up to its capacity).

Graphs are keyed by (canvas rows, capacity bucket) and kept in a small LRU. `capture=False` runs the very
same static-buffer code eagerly: that is how the CPU tests check it against the plain path.
Only the argmax path is captured (temperature 0): a sampling seed would be frozen into the graph.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor

from dg_lsp.engine.model import KVCache, Transformer

CAPACITY_STEP = 256  # context capacity is rounded up to this: few graphs, little wasted attention work


class StepGraph:
    def __init__(self, model: Transformer, rows: int, capacity: int, banned: int, capture: bool):
        cfg, p = model.cfg, model.tok_embeddings.weight
        self.model, self.banned, self.capacity = model, banned, capacity
        self.tokens = torch.zeros(1, rows, dtype=torch.long, device=p.device)
        self.positions = torch.zeros(1, rows, dtype=torch.long, device=p.device)
        shape = (1, cfg.num_key_value_heads, capacity, cfg.head_dim)
        self.ctx = KVCache([torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(cfg.num_hidden_layers)],
                           [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(cfg.num_hidden_layers)])
        self.ctx_len = torch.zeros((), dtype=torch.int32, device=p.device)
        self.graph = None
        if capture:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up: compile every kernel before capture
                for _ in range(2):
                    self._forward()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self._forward()

    def _forward(self):
        hidden = self.model.denoise(self.tokens, self.positions, self.ctx, ctx_len=self.ctx_len)
        return self.model.ops(hidden).lm_head_epilogue(hidden[0], self.model.lm_head_weight, banned=self.banned)

    def bind(self, ctx: KVCache) -> None:
        """Copy a request's context K/V into the static buffers (once per request, not per step)."""
        n = ctx.length
        for dst, src in zip(self.ctx.k + self.ctx.v, ctx.k + ctx.v):
            dst[:, :, :n].copy_(src)
        self.ctx_len.fill_(n)

    def run(self, tokens: Tensor, positions: Tensor):
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        if self.graph is None:
            return self._forward()
        self.graph.replay()
        return self.out


class StepGraphs:
    """The LRU of captured steps, and which one is bound to the current request's context."""

    def __init__(self, model: Transformer, banned: int, capture: bool, max_graphs: int = 8):
        self.model, self.banned, self.capture, self.max_graphs = model, banned, capture, max_graphs
        self.graphs: OrderedDict[tuple[int, int], StepGraph] = OrderedDict()

    def prepare(self, rows: int, ctx: KVCache) -> StepGraph:
        capacity = -(-max(ctx.length, 1) // CAPACITY_STEP) * CAPACITY_STEP
        key = (rows, capacity)
        graph = self.graphs.pop(key, None)
        if graph is None:
            if len(self.graphs) >= self.max_graphs:
                self.graphs.popitem(last=False)
            graph = StepGraph(self.model, rows, capacity, self.banned, self.capture)
        self.graphs[key] = graph
        graph.bind(ctx)
        return graph
