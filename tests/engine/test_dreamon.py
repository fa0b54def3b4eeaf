"""Variable-length canvases (DreamOn's expand/delete tokens): the engine commits, grows and shrinks a hole as
the slow reference of DreamOn's loop does, token for token; checkpoints without those tokens are unchanged."""

import pytest
import torch

from dg_lsp.engine.engine import load
from dg_lsp.engine.prompt import build_layout, with_canvases
from dg_lsp.engine.reference import reference_dreamon
from dg_lsp.engine.request import Hole, InfillRequest, SamplerConfig
from dg_lsp.engine.sampler import resize_hole
from dg_lsp.engine.testing import write_tiny_checkpoint

PREFIX = "def read_lines(path):\n    with open(path) as f:\n        return"
REQUEST = InfillRequest.at_cursor(PREFIX, "\n\n\nmain()\n", 4)
M, E, D = 2, 3, 4  # mask, expand, delete ids of the tiny dream tokenizer below (eos 0, bos 1)


@pytest.fixture(scope="module")
def dreamon_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("dreamon") / "ckpt", "dream", seed=1,
                                 extra_specials=("<|expand|>", "<|delete|>"))


def biased(eng, expand: float, delete: float):
    """A random model almost never proposes expand/delete; raise their logits (max logit here is ~60) so it
    does. The wrapper sits on this engine's model instance only, so engine and reference both see it."""
    bias = torch.zeros(eng.cfg.vocab_size, dtype=torch.float64)
    bias[eng.cfg.expand_id], bias[eng.cfg.delete_id] = expand, delete
    plain = eng.model.logits
    eng.model.logits = lambda hidden: plain(hidden) + bias
    return eng


def sequence(layout, state):
    (start, end), = layout.holes
    return list(layout.tokens[:start]) + state.canvas.tolist() + list(layout.tokens[end:])


def test_tokens_are_detected_from_the_tokenizer(dreamon_dir, tiny_dirs):
    eng = load(dreamon_dir, device="cpu", dtype="float64")
    assert (eng.cfg.expand_id, eng.cfg.delete_id, eng.cfg.mask_id) == (E, D, M) and eng.cfg.variable_length
    plain = load(tiny_dirs["dream"], device="cpu", dtype="float64")
    assert (plain.cfg.expand_id, plain.cfg.delete_id) == (None, None) and not plain.cfg.variable_length


def test_expand_without_delete_token_deletes_eos(tmp_path):
    """DreamOn's eval loop (delete_eos_token) removes positions that become EOS."""
    eng = load(write_tiny_checkpoint(tmp_path / "c", "dream", seed=1, extra_specials=("<|expand|>",)), device="cpu")
    assert (eng.cfg.expand_id, eng.cfg.delete_id) == (E, eng.cfg.eos_id)


@pytest.mark.parametrize("confidence", ["max_prob", "entropy"])
@pytest.mark.parametrize("expand,delete,max_canvas,grows,shrinks", [
    (55.0, 45.0, 10, True, True),  # grows to the cap, shrinks and regrows until the budget is spent
    (45.0, 55.0, 10, False, True),  # a delete, then every masked position after it (pad to the right)
    (60.0, 60.0, 12, True, True),
])
def test_engine_matches_dreamon_loop(dreamon_dir, confidence, expand, delete, max_canvas, grows, shrinks):
    eng = biased(load(dreamon_dir, device="cpu", dtype="float64", refresh_context_every=1), expand, delete)
    layout = build_layout(REQUEST, eng.tokenizer, eng.cfg)
    # one commit per step, as DreamOn: the even schedule commits ceil(masked / steps left) = 1 with many steps
    sampler = SamplerConfig(steps=256, confidence=confidence, halt_when_stable=False, ends_in_order=False,
                            max_canvas=max_canvas)
    states = list(eng.infill(REQUEST, sampler))
    assert all(s.committed == 1 for s in states) and states[-1].done
    expected = reference_dreamon(eng.model, eng.cfg, layout, max_canvas, confidence=confidence)
    assert sequence(layout, states[-1]) == expected.tolist()
    lengths = [4] + [s.lengths[0] for s in states]
    assert [b - a for a, b in zip(lengths, lengths[1:])] == [s.expanded - s.deleted for s in states]
    assert (sum(s.expanded for s in states) > 0) == grows and (sum(s.deleted for s in states) > 0) == shrinks
    assert max(lengths) <= max(max_canvas, 4) and sum(s.expanded for s in states) <= max_canvas  # cap, budget
    assert {M, E, D}.isdisjoint(states[-1].canvas.tolist())


def test_complete_decodes_the_final_lengths_with_cached_context(dreamon_dir):
    """Without refresh the context K/V are reused across the rebuilds; the result is still a full middle."""
    eng = biased(load(dreamon_dir, device="cpu", dtype="float64"), 55.0, 45.0)
    sampler = SamplerConfig(steps=256, halt_when_stable=False, ends_in_order=False, max_canvas=10)
    states = list(eng.infill(REQUEST, sampler))
    assert sum(s.expanded for s in states) and sum(s.deleted for s in states)
    result = eng.complete(REQUEST, sampler)
    assert result.canvas_tokens == states[-1].lengths[0] == len(states[-1].canvas)
    assert "<|mask|>" not in result.text and "<|expand|>" not in result.text


def test_variable_length_rejects_renoise_and_blocks(dreamon_dir):
    eng = load(dreamon_dir, device="cpu", dtype="float64")
    for sampler in (SamplerConfig(commit="renoise"), SamplerConfig(block_length=2)):
        with pytest.raises(Exception, match="expand/delete"):
            list(eng.infill(REQUEST, sampler))


def test_resize_hole():
    # a commit of delete at 1: the masked position after it becomes delete too; both go, the committed 7 stays
    assert resize_hole([5, D, M, 7], [False, True, True, False], E, D, M, room=3) == ([5, 7], 0, 2)
    # an expand becomes two masks, spending the room
    assert resize_hole([M, E, 6], [True, True, False], E, D, M, room=1) == ([M, M, M, 6], 1, 0)
    # out of room: right to left, the rest become one mask
    assert resize_hole([E, 6, E], [True, False, True], E, D, M, room=1) == ([M, 6, M, M], 1, 0)


def test_with_canvases_shifts_what_follows(dreamon_dir):
    eng = load(dreamon_dir, device="cpu")
    layout = build_layout(InfillRequest(segments=("a", "b", "c"), holes=(Hole(2), Hole(2))), eng.tokenizer, eng.cfg)
    grown = with_canvases(layout, [[M, M, M], []], eng.cfg)
    (s0, e0), (s1, e1) = layout.holes
    assert grown.holes == ((s0, s0 + 3), (s1 + 1, s1 + 1))
    assert grown.tokens == layout.tokens[:s0] + (M,) * 3 + layout.tokens[e0:s1] + layout.tokens[e1:]
