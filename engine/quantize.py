"""Weight-only quantization of the transformer's linear layers, through torchao.

int8 weight-only: each Linear weight [out, in] is stored as int8 with one fp32 scale per output row
(symmetric, per channel), about a quarter of its fp32 bytes or half its bf16 bytes. Activations stay in
the compute dtype: torchao's tensor subclass takes over `F.linear`, so the model code is unchanged
(`self.wqkv(x)` dispatches to it) on CPU and CUDA alike. What it saves is memory, not time: eagerly (we
do not torch.compile) torchao casts each int8 weight to the compute dtype inside every call, one layer's
transient copy at a time, so a step runs somewhat slower than unquantized (bench/bench_quantize.py).

What is quantized: attention wqkv and wo, feed-forward w13 and w2 of every block. What is not:
- the LM head. With tied embeddings it is the embedding table, which `nn.Embedding` indexes as a dense
  float tensor; untied or not, the fused LM-head epilogue (a Triton kernel on CUDA) reads the raw weight
  pointer, which a tensor subclass does not have. It is also the layer whose errors reach the sampler
  directly. So `model.lm_head_weight` stays a plain tensor on every path.
- the norms (vectors; nothing to gain) and the embedding.

torchao is imported here only, when quantization is asked for: the server starts without it.
int4 weight-only is CUDA-only in torchao (tinygemm kernels) and is left out until it is tested on a GPU.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from dg_lsp.engine.errors import ConfigError

SCHEMES = ("int8",)
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what torchao's int8 tensor accepts


def check_scheme(scheme: str | None, dtype: torch.dtype | None = None) -> str | None:
    """The scheme to apply (None: none), or ConfigError naming the setting and the allowed values."""
    if scheme in (None, "none"):
        return None
    if scheme == "int4":
        raise ConfigError("quantize='int4': int4 weight-only runs on CUDA only (torchao tinygemm) and is left "
                          "out until it is tested on a GPU; expected int8 or none")
    if scheme not in SCHEMES:
        raise ConfigError(f"quantize={scheme!r} is not supported: expected int8 (weight-only) or none")
    if dtype is not None and dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"quantize={scheme!r} needs a float32, bfloat16 or float16 compute dtype, got "
                          f"{str(dtype).removeprefix('torch.')}")
    return scheme


def quantize_model(model: nn.Module, scheme: str) -> None:
    """Quantize the block linears of `model` in place, on the device and in the dtype they are in."""
    dtype = next(model.parameters()).dtype
    if check_scheme(scheme, dtype) is None:
        return
    try:
        with _quiet("torchao", "torch.utils._pytree"):
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except Exception as exc:  # noqa: BLE001 - missing, or built against an incompatible torch
        raise ConfigError(f"quantize={scheme!r} needs torchao (pip install 'torchao>=0.18'), which failed to "
                          f"import: {type(exc).__name__}: {exc}") from exc
    # set_inductor_config=False: the default edits torch._inductor's global config; we do not compile
    config = Int8WeightOnlyConfig(set_inductor_config=False)
    quantize_(model, config, filter_fn=_is_block_linear)


def _is_block_linear(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and fqn.startswith("layers.")


def tensor_bytes(t: Tensor) -> int:
    """Bytes a tensor holds; for a tensor subclass (torchao's Int8Tensor), its inner tensors' bytes
    (int8 values + scales + zero points), found through the `__tensor_flatten__` protocol."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, a tied weight counted once."""
    return sum(tensor_bytes(t) for t in (*model.parameters(), *model.buffers()))


@contextmanager
def _quiet(*loggers: str):
    """torchao logs a warning for each CUDA-only extension a CPU build of torch cannot load (int8
    weight-only needs none of them), and torch one for an enum torchao registers: hide them at import."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
