"""Engine behaviour on a tiny random checkpoint: the step generator, cancellation, caching, bad requests."""

import pytest
import torch

from dg_lsp.engine.engine import load
from dg_lsp.engine.errors import InfillCancelled, RequestError
from dg_lsp.engine.prompt import build_layout, continue_after
from dg_lsp.engine.request import Hole, InfillRequest, SamplerConfig

PREFIX = "import sys\n\n\ndef main(argv=None):\n    args = sys.argv[1:] if argv is None else argv\n    for name in args:\n"
SUFFIX = "\n    return 0\n"


@pytest.fixture
def eng(tiny_dirs):
    return load(tiny_dirs["dg"], device="cpu")


def test_steps_commit_the_whole_canvas_then_stop(eng):
    states = list(eng.infill(InfillRequest.at_cursor(PREFIX, SUFFIX, 10), SamplerConfig(steps=4, halt_when_stable=False)))
    assert [s.committed for s in states] == [3, 3, 2, 2]  # LLaDA's even split of 10 over 4 steps
    assert [s.done for s in states] == [False, False, False, True]
    assert not states[-1].masked.any() and eng.cfg.mask_id not in states[-1].canvas.tolist()
    assert states[0].encode_ms > 0 and all(s.encode_ms == 0 for s in states[1:])


def test_threshold_commits_at_least_one_per_step(eng):
    sampler = SamplerConfig(steps=6, commit="threshold", threshold=1.0, halt_when_stable=False)
    states = list(eng.infill(InfillRequest.at_cursor(PREFIX, SUFFIX, 8), sampler))
    # nothing reaches probability 1.0 on a random model: one per step, the rest at the last step
    assert [s.committed for s in states] == [1, 1, 1, 1, 1, 3]


def test_threshold_commits_everything_confident_at_once(eng):
    sampler = SamplerConfig(steps=8, commit="threshold", threshold=1e-9, halt_when_stable=False)
    states = list(eng.infill(InfillRequest.at_cursor(PREFIX, SUFFIX, 8), sampler))
    assert len(states) == 1 and states[0].committed == 8


def test_renoise_ends_with_a_full_canvas(eng):
    sampler = SamplerConfig(steps=5, commit="renoise", halt_when_stable=False)
    states = list(eng.infill(InfillRequest.at_cursor(PREFIX, SUFFIX, 10), sampler))
    assert len(states) == 5 and states[-1].done
    # the committed count follows the schedule even when positions are swapped
    assert [int((~s.masked).sum()) for s in states] == [2, 4, 6, 8, 10]


def test_halt_when_stable_never_takes_more_steps(eng):
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 12)
    slow = list(eng.infill(request, SamplerConfig(steps=12, halt_when_stable=False)))
    fast = list(eng.infill(request, SamplerConfig(steps=12, halt_when_stable=True)))
    assert len(slow) == 12 and 2 <= len(fast) <= 12 and fast[-1].done


def test_sampling_is_deterministic_given_a_generator(eng):
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 8)
    sampler = SamplerConfig(steps=4, temperature=5.0)  # flatten the random model's peaked distribution

    def run(seed):
        *_, last = eng.infill(request, sampler, torch.Generator().manual_seed(seed))
        return tuple(last.canvas.tolist())

    runs = [run(seed) for seed in (7, 7, 8, 9, 10)]
    assert runs[0] == runs[1]
    assert len(set(runs)) > 1  # different seeds do sample differently


def test_tiny_top_p_is_the_argmax(eng):
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 8)
    greedy = eng.complete(request, SamplerConfig(steps=4)).text
    nucleus = eng.complete(request, SamplerConfig(steps=4, temperature=1.0, top_p=1e-6), torch.Generator().manual_seed(1))
    assert nucleus.text == greedy


def test_cancel_between_steps_and_no_partial_state(tiny_dirs, eng):
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 10)
    sampler = SamplerConfig(steps=5, halt_when_stable=False)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(InfillCancelled):
        list(eng.infill(request, sampler, cancel=cancel))
    assert len(calls) == 3  # polled before each step; the third poll stopped it
    fresh = load(tiny_dirs["dg"], device="cpu")
    assert eng.complete(request, sampler).texts == fresh.complete(request, sampler).texts


def test_prefix_cache_reuse_is_exact_and_encodes_only_new_tokens(tiny_dirs, eng, monkeypatch):
    sampler = SamplerConfig(steps=4, halt_when_stable=False)
    encoded = []
    original = eng.model.encode
    monkeypatch.setattr(eng.model, "encode", lambda t, p, past=None: encoded.append(t.shape[1]) or original(t, p, past))
    typed = PREFIX + "        if not"
    texts = [eng.complete(InfillRequest.at_cursor(typed[:n], SUFFIX, 8), sampler).text
             for n in (len(PREFIX), len(PREFIX) + 6, len(typed))]
    fresh = [load(tiny_dirs["dg"], device="cpu").complete(InfillRequest.at_cursor(typed[:n], SUFFIX, 8), sampler).text
             for n in (len(PREFIX), len(PREFIX) + 6, len(typed))]
    assert texts == fresh
    first = encoded[0]
    suffix_tokens = len(eng.tokenizer.encode(SUFFIX))
    # later requests re-encode only the typed tokens and the suffix (whose positions moved)
    assert all(n <= suffix_tokens + 4 for n in encoded[1:]) and first > suffix_tokens + 10


def test_same_request_twice_reuses_the_whole_context(eng, monkeypatch):
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 6)
    first = eng.complete(request, SamplerConfig(steps=3)).text
    monkeypatch.setattr(eng.model, "encode", lambda *a, **k: pytest.fail("context was re-encoded"))
    assert eng.complete(request, SamplerConfig(steps=3)).text == first


def test_rewrite_strength_zero_keeps_the_selection(eng):
    sel = "print(name)"
    n = len(eng.tokenizer.encode(sel))
    result = eng.complete(InfillRequest.rewrite(PREFIX + "        ", sel, SUFFIX, n), SamplerConfig(steps=2, strength=0.0))
    assert result.text == sel  # nothing re-noised, no free slot: the canvas is the selection


def test_rewrite_strength_renoises_that_share(eng):
    sel = "total += len(line)"
    n = len(eng.tokenizer.encode(sel))
    states = list(eng.infill(InfillRequest.rewrite(PREFIX + "        ", sel, SUFFIX, n + 2),
                             SamplerConfig(steps=8, strength=0.5, halt_when_stable=False)))
    masked_after_scoring = sum(s.committed for s in states)
    assert masked_after_scoring == round(0.5 * n) + 2  # half the selection plus the two free slots


def test_multi_hole_request_fills_each_hole(eng):
    request = InfillRequest(segments=("import os\n", "\n\ndef main():\n    ", "\n"), holes=(Hole(4), Hole(5)))
    result = eng.complete(request, SamplerConfig(steps=3))
    assert len(result.texts) == 2 and result.canvas_tokens == 9


@pytest.mark.parametrize("make,match", [
    (lambda: InfillRequest.at_cursor("", "", 8), "empty prefix and suffix"),
    (lambda: InfillRequest.at_cursor("x = ", "", 0), "canvas length 0 is out of range"),
    (lambda: InfillRequest.at_cursor("x = ", "", 100_000), "canvas length 100000 is out of range"),
    (lambda: InfillRequest(segments=("a",), holes=(Hole(3),)), "2 text segments for 1 holes|1 text segments"),
    (lambda: SamplerConfig(steps=0), "steps=0"),
    (lambda: SamplerConfig(top_p=0.0), "top_p=0.0"),
    (lambda: SamplerConfig(confidence="vibes"), "confidence='vibes'"),
])
def test_bad_requests_are_clear_errors(make, match):
    with pytest.raises(RequestError, match=match):
        make()


def test_prompt_longer_than_the_context_then_the_engine_still_serves(eng):
    too_long = "x = 1\n" * 400  # the tiny model's context is 512 positions
    with pytest.raises(RequestError, match=r"longer than the model's context of 512"):
        eng.complete(InfillRequest.at_cursor(too_long, SUFFIX, 8))
    with pytest.raises(RequestError, match="longer than its canvas"):
        eng.complete(InfillRequest.rewrite("x = ", "a + b + c + d", "\n", 2))
    assert len(eng.complete(InfillRequest.at_cursor(PREFIX, SUFFIX, 4), SamplerConfig(steps=2)).texts) == 1


LONG = "def main(argv=None):\n    args = sys.argv[1:] if argv is None else argv\n"


def canvas_texts(eng, states):
    """Each finished canvas's text, in order (these tests turn end tokens off: nothing is cut)."""
    return [eng.tokenizer.decode(s.state.canvas.tolist()) for s in states if s.state.done]


def test_a_long_request_continues_canvas_after_canvas(eng, monkeypatch):
    monkeypatch.setattr(type(eng.cfg), "end_ids", property(lambda cfg: frozenset()))  # no canvas ends early
    sampler = SamplerConfig(steps=3, halt_when_stable=False)
    states = list(eng.continue_infill(InfillRequest.at_cursor(LONG, SUFFIX, 6), sampler, max_canvases=3))
    assert [s.canvas for s in states] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [s.done for s in states] == [False] * 8 + [True]
    texts = canvas_texts(eng, states)
    assert len(texts) == 3 and states[-1].text == "".join(texts)
    assert states[3].text == texts[0]  # the second canvas's steps carry the first canvas's text
    # the second canvas, its prefix's K/V reused from the first (exact for this causal family), is what a
    # fresh engine makes of the layout with the first canvas's tokens in the prefix
    layout = build_layout(InfillRequest.at_cursor(LONG, SUFFIX, 6), eng.tokenizer, eng.cfg)
    second = continue_after(layout, states[2].state.canvas.tolist(), 6, eng.cfg)
    *_, last = load_same(eng).infill_layout(second, sampler)
    assert last.canvas.tolist() == states[5].state.canvas.tolist()


def load_same(eng):
    """A second engine on the same weights and fresh caches."""
    from dg_lsp.engine.engine import Engine

    return Engine(eng.model, eng.tokenizer, eng.cfg)


def test_cancel_between_steps_of_the_second_canvas(eng, monkeypatch):
    monkeypatch.setattr(type(eng.cfg), "end_ids", property(lambda cfg: frozenset()))
    polls = []

    def cancel():
        polls.append(1)
        return len(polls) > 5  # 3 steps of the first canvas, the check between canvases, 1 step of the second

    states = []
    with pytest.raises(InfillCancelled):
        for state in eng.continue_infill(InfillRequest.at_cursor(LONG, SUFFIX, 6),
                                         SamplerConfig(steps=3, halt_when_stable=False), cancel=cancel, max_canvases=3):
            states.append(state)
    assert [s.canvas for s in states] == [0, 0, 0, 1]


def test_the_stop_rule_ends_after_the_first_canvas(eng, monkeypatch):
    monkeypatch.setattr(type(eng.cfg), "end_ids", property(lambda cfg: frozenset()))
    seen = []
    states = list(eng.continue_infill(InfillRequest.at_cursor(LONG, SUFFIX, 6), SamplerConfig(steps=2),
                                      max_canvases=4, stop=lambda text: seen.append(text) or True))
    assert {s.canvas for s in states} == {0} and states[-1].done
    assert seen == [states[-1].text]


def test_an_end_token_ends_the_continuation(eng):
    # the random model's canvas holds an end token or not; either way nothing follows a canvas that does
    states = list(eng.continue_infill(InfillRequest.at_cursor(LONG, SUFFIX, 6), SamplerConfig(steps=2), max_canvases=3))
    for s in states:
        if s.state.done and s.canvas < states[-1].canvas:
            assert not set(s.state.canvas.tolist()) & eng.cfg.end_ids


@pytest.mark.parametrize("family", ["dream", "llada", "open-dcoder"])
def test_bidirectional_families_continue_too(tiny_dirs, family, monkeypatch):
    eng = load(tiny_dirs[family], device="cpu")
    monkeypatch.setattr(type(eng.cfg), "end_ids", property(lambda cfg: frozenset()))
    states = list(eng.continue_infill(InfillRequest.at_cursor(LONG, SUFFIX, 5), SamplerConfig(steps=2), max_canvases=2))
    assert sorted({s.canvas for s in states}) == [0, 1] and states[-1].done
    assert states[-1].text == "".join(canvas_texts(eng, states))
