"""Pure sampler functions against the reference codes' formulas."""

import pytest
import torch

from dg_lsp.engine.request import SamplerConfig
from dg_lsp.engine.sampler import Proposal, commit_count, held_back_ends, propose, top_p_filter, update_canvas


def llada_num_transfer_tokens(n: int, steps: int) -> list[int]:
    """LLaDA generate.py get_num_transfer_tokens, for one row."""
    base, remainder = n // steps, n % steps
    return [base + (1 if i < remainder else 0) for i in range(steps)]


@pytest.mark.parametrize("n", [1, 5, 10, 31, 64])
@pytest.mark.parametrize("steps", [1, 3, 4, 8, 16])
def test_even_schedule_reproduces_llada_split(n, steps):
    masked, counts = n, []
    for step in range(steps):
        k = commit_count(masked, step, steps, "even")
        counts.append(k)
        masked -= k
    assert counts == llada_num_transfer_tokens(n, steps)


@pytest.mark.parametrize("n", [3, 10, 32])
@pytest.mark.parametrize("steps", [2, 4, 7])
def test_dream_schedule_follows_dream_timesteps(n, steps):
    timesteps = torch.linspace(1, 1e-3, steps + 1)
    masked = n
    for i in range(steps):
        expected = int(masked * (1 - timesteps[i + 1] / timesteps[i])) if i < steps - 1 else masked
        got = commit_count(masked, i, steps, "dream")
        assert got == expected
        masked -= got
    assert masked == 0


def proposal(tokens, prob, confidence=None):
    prob = torch.tensor(prob)
    return Proposal(torch.tensor(tokens), prob, prob if confidence is None else torch.tensor(confidence))


def test_schedule_commits_the_most_confident_masked():
    canvas, masked = torch.tensor([9, 9, 9, 5]), torch.tensor([True, True, True, False])
    p = proposal([1, 2, 3, 4], [0.2, 0.9, 0.5, 0.99])
    new, still = update_canvas(canvas, masked, p, None, step=0, sampler=SamplerConfig(steps=3), mask_id=9)
    assert new.tolist() == [9, 2, 9, 5] and still.tolist() == [True, False, True, False]


def test_threshold_commits_all_above_and_at_least_one():
    canvas, masked = torch.full((4,), 9), torch.ones(4, dtype=torch.bool)
    sampler = SamplerConfig(steps=4, commit="threshold", threshold=0.6)
    new, _ = update_canvas(canvas, masked, proposal([1, 2, 3, 4], [0.7, 0.1, 0.65, 0.2]), None, 0, sampler, 9)
    assert new.tolist() == [1, 9, 3, 9]
    new, _ = update_canvas(canvas, masked, proposal([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.25]), None, 0, sampler, 9)
    assert new.tolist() == [9, 2, 9, 9]


def test_renoise_swaps_a_doubtful_committed_token_for_a_confident_proposal():
    canvas = torch.tensor([7, 9, 9, 9])  # position 0 committed earlier
    masked = torch.tensor([False, True, True, True])
    current = torch.tensor([0.05, 0.0, 0.0, 0.0])  # the model now doubts token 7
    p = proposal([1, 2, 3, 4], [0.3, 0.95, 0.1, 0.8])
    sampler = SamplerConfig(steps=4, commit="renoise")
    new, still = update_canvas(canvas, masked, p, current, step=1, sampler=sampler, mask_id=9)
    # the schedule asks for 1 more commit (2 in all): the two most likely are positions 1 and 3
    assert new.tolist() == [9, 2, 9, 4] and still.tolist() == [True, False, True, False]


def test_last_step_commits_everything():
    canvas, masked = torch.full((5,), 9), torch.ones(5, dtype=torch.bool)
    for commit in ("schedule", "threshold", "renoise"):
        new, still = update_canvas(canvas, masked, proposal([1, 2, 3, 4, 5], [0.1] * 5), torch.zeros(5),
                                   step=3, sampler=SamplerConfig(steps=4, commit=commit, threshold=0.9), mask_id=9)
        assert new.tolist() == [1, 2, 3, 4, 5] and not still.any()


def test_confidence_kinds():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    probs = logits.softmax(-1)
    p = propose(logits, SamplerConfig(confidence="max_prob"))
    assert p.tokens.tolist() == [0, 2] and torch.allclose(p.confidence, probs.max(-1).values)
    p = propose(logits, SamplerConfig(confidence="margin"))
    top2 = probs.topk(2).values
    assert torch.allclose(p.confidence, top2[:, 0] - top2[:, 1])
    p = propose(logits, SamplerConfig(confidence="entropy"))
    assert torch.allclose(p.confidence, (probs * probs.log()).sum(-1), atol=1e-6)
    assert p.confidence[1] > p.confidence[0]  # the peaked row is the more confident one
    a = propose(logits, SamplerConfig(confidence="random"), torch.Generator().manual_seed(0))
    b = propose(logits, SamplerConfig(confidence="random"), torch.Generator().manual_seed(0))
    assert torch.equal(a.confidence, b.confidence)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = top_p_filter(logits, 0.7) > torch.finfo(torch.float32).min
    assert kept.tolist() == [[True, True, False, False]]
    assert (top_p_filter(logits, 1e-9) > torch.finfo(torch.float32).min).tolist() == [[True, False, False, False]]


def test_temperature_sampling_uses_only_the_generator():
    logits = torch.zeros(200, 50)
    a = propose(logits, SamplerConfig(temperature=1.0), torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global RNG must not matter
    b = propose(logits, SamplerConfig(temperature=1.0), torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens) and len(set(a.tokens.tolist())) > 20


def test_end_tokens_wait_for_their_left_neighbour():
    # canvas of two holes: [0..3] and [4..5]; pad = 0. Pads at 2 and 3 are surest but 1 is still open.
    masked = torch.tensor([True, True, True, True, True, True])
    hole_start = torch.tensor([True, False, False, False, True, False])
    proposed = torch.tensor([5, 6, 0, 0, 0, 7])
    held = held_back_ends(proposed, masked, hole_start, torch.tensor([0]))
    # position 4 proposes pad but starts its hole: an empty middle is decided on its own confidence
    assert held.tolist() == [False, False, True, True, False, False]


def test_held_back_ends_commit_last_and_left_to_right():
    canvas, masked = torch.full((4,), 9), torch.ones(4, dtype=torch.bool)
    p = proposal([1, 2, 0, 0], [0.3, 0.2, 0.99, 0.98])
    held = torch.tensor([False, False, True, True])
    new, _ = update_canvas(canvas, masked, p, None, 0, SamplerConfig(steps=2), 9, held)
    assert new.tolist() == [1, 2, 9, 9]  # two commits go to the content, not the surer pads
    new, _ = update_canvas(canvas, masked, p, None, 0, SamplerConfig(steps=4, commit="threshold", threshold=0.9), 9, held)
    assert new.tolist() == [1, 9, 9, 9]  # the pads pass the threshold but wait; at least one commit happens
    p = proposal([1, 2, 0, 0], [0.3, 0.2, 0.99, 0.98])
    new, _ = update_canvas(canvas, masked, p, torch.zeros(4), 0, SamplerConfig(steps=4, commit="renoise"), 9, held)
    assert new.tolist() == [1, 9, 9, 9]
