"""kernels.cpu against kernels.naive: the fast epilogue (matmul in the weights' 16-bit dtype) and the fused
attention."""

import pytest
import torch

from dg_lsp.kernels import cpu, naive

# bf16 rounds each logit to 8 significant bits: at logits of std ~3 that moves a probability by up to
# ~2% of itself and an entropy a little less; a wrong statistic is off by O(1)
TOL = {torch.bfloat16: 3e-2, torch.float16: 4e-3}
SHAPES = [(1, 500, 32), (15, 257, 64), (63, 130, 32), (300, 2_003, 96)]


def _inputs(r, v, d, dtype, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(r, d, generator=g)
    weight = torch.randn(v, d, generator=g) * (scale / d**0.5)
    return hidden.to(dtype), weight.to(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature,softcap", [(0.0, None), (0.7, None), (1.0, 30.0)])
def test_fast_epilogue_matches_reference(shape, dtype, temperature, softcap, assert_close):
    hidden, weight = _inputs(*shape, dtype)
    kw = dict(temperature=temperature, softcap=softcap, seed=11, banned=3)
    fast, ref = cpu.lm_head_epilogue(hidden, weight, **kw), naive.lm_head_epilogue(hidden, weight, **kw)
    for name in ("max_prob", "margin", "entropy"):
        assert_close(name, getattr(fast, name), getattr(ref, name), TOL[dtype])
    # the argmax may differ only where the reference's top two logits are within the rounding of 16 bits
    logits = hidden.float() @ weight.float().T
    logits[:, 3] = float("-inf")
    top2 = logits.topk(2, dim=-1).values
    gap = (top2[:, 0] - top2[:, 1]) / top2[:, 0].abs().clamp_min(1.0)
    clear = gap > 2 * torch.finfo(dtype).eps
    assert clear.any()
    assert torch.equal(fast.argmax[clear], ref.argmax[clear])
    assert not (fast.argmax == 3).any() and not (fast.sample == 3).any()
    if temperature == 0:
        assert torch.equal(fast.sample, fast.argmax)


def test_same_seed_same_sample_and_fp32_takes_the_reference_exactly():
    hidden, weight = _inputs(31, 700, 48, torch.bfloat16)
    a = cpu.lm_head_epilogue(hidden, weight, temperature=0.9, seed=5)
    b = cpu.lm_head_epilogue(hidden, weight, temperature=0.9, seed=5)
    assert torch.equal(a.sample, b.sample)
    h32, w32 = hidden.float(), weight.float()
    fast, ref = cpu.lm_head_epilogue(h32, w32, temperature=0.9, seed=5), naive.lm_head_epilogue(h32, w32, temperature=0.9, seed=5)
    for name in ("argmax", "max_prob", "margin", "entropy", "sample", "sample_prob"):
        assert torch.equal(getattr(fast, name), getattr(ref, name)), name


def test_bad_shapes_are_refused_like_the_reference():
    hidden, weight = _inputs(4, 50, 16, torch.bfloat16)
    with pytest.raises(ValueError, match="expected hidden"):
        cpu.lm_head_epilogue(hidden[:, :8], weight)


# fused attention: fp32 softmax in both; 16-bit inputs, so the one output rounding dominates
ATTN_TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}


@pytest.mark.parametrize("ctx,canvas", [(0, 1), (1, 15), (63, 16), (300, 17), (1_000, 64)])
@pytest.mark.parametrize("heads", [(4, 4), (14, 2), (8, 1)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fused_attention_matches_reference(ctx, canvas, heads, dtype, assert_close):
    hq, hkv = heads
    g = torch.Generator().manual_seed(ctx + canvas)
    q = torch.randn(1, hq, canvas, 64, generator=g).to(dtype)
    k_ctx, v_ctx = (torch.randn(1, hkv, ctx + 5, 64, generator=g).to(dtype) for _ in range(2))  # 5 spare rows
    k_can, v_can = (torch.randn(1, hkv, canvas, 64, generator=g).to(dtype) for _ in range(2))
    for n in (ctx, torch.tensor(ctx)):
        fast = cpu.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.125, n)
        ref = naive.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.125, n)
        assert_close("out", fast, ref, ATTN_TOL[dtype])


def test_fused_attention_refuses_what_the_reference_refuses():
    q = torch.randn(1, 6, 3, 16)
    kv = torch.randn(1, 4, 5, 16)
    with pytest.raises(ValueError, match="multiple"):
        cpu.canvas_attention(q, kv, kv, kv[:, :, :3], kv[:, :, :3], 0.25)
    with pytest.raises(ValueError, match="ctx_len"):
        cpu.canvas_attention(q[:, :4], kv, kv, kv[:, :, :3], kv[:, :, :3], 0.25, 9)
