"""A few steps of a toy configuration on CPU: the loss goes down, and resuming is exact."""

import numpy as np
import pytest
import torch

from dg_lsp.engine.engine import Engine
from dg_lsp.engine.testing import SAMPLE_CODE, tiny_tokenizer
from dg_lsp.engine.tokenizer import Tokenizer
from dg_lsp.training.examples import ExampleSpec, make_example
from dg_lsp.training.train import SPECIAL, ModelShape, TrainConfig, Trainer, export

TEXTS = [SAMPLE_CODE, SAMPLE_CODE.replace("total", "count").replace("name", "path"), SAMPLE_CODE.upper()]


@pytest.fixture(scope="module")
def tok():
    hf = tiny_tokenizer(["<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>"], vocab_size=320)
    hf.encode_special_tokens = True
    return Tokenizer(hf)


def toy(steps, **kw):
    shape = ModelShape(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=128, vocab=320)
    return TrainConfig(shape=shape, example=ExampleSpec(seq_len=96, max_middle=16, window_chars=600), batch=8,
                       steps=steps, lr=3e-3, warmup=5, log_every=5, save_every=1000, **kw)


def test_examples_lay_out_like_the_engine(tok):
    rng = np.random.default_rng(0)
    for _ in range(50):
        ex = make_example(SAMPLE_CODE, tok, rng, ExampleSpec(seq_len=96, max_middle=16, window_chars=600),
                          SPECIAL["bos"], SPECIAL["pad"])
        if ex is None:
            continue
        assert len(ex.tokens) == len(ex.is_canvas) <= 96 and ex.tokens[0] == SPECIAL["bos"]
        assert SPECIAL["mask"] not in ex.tokens
        # each canvas is the middle then pad only: no content after the first pad of a hole
        runs, current = [], []
        for t, c in zip(ex.tokens, ex.is_canvas):
            if c:
                current.append(t)
            elif current:
                runs.append(current)
                current = []
        for run in runs + ([current] if current else []):
            first_pad = run.index(SPECIAL["pad"]) if SPECIAL["pad"] in run else len(run)
            assert all(t == SPECIAL["pad"] for t in run[first_pad:])


def test_loss_goes_down(tmp_path, tok):
    trainer = Trainer(toy(60), TEXTS, tok, tmp_path, log=lambda line: None)
    history = trainer.train()
    first = np.mean([h["diffusion"] for h in history[:10]])
    last = np.mean([h["diffusion"] for h in history[-10:]])
    assert last < 0.7 * first, (first, last)
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 12  # a line every 5 steps


def test_resume_is_exact(tmp_path, tok):
    straight = Trainer(toy(6), TEXTS, tok, tmp_path / "a", log=lambda line: None)
    (tmp_path / "a").mkdir()
    straight.train()
    (tmp_path / "b").mkdir()
    first = Trainer(toy(6), TEXTS, tok, tmp_path / "b", log=lambda line: None)
    first.train(until=3)
    first.save()
    resumed = Trainer(toy(6), TEXTS, tok, tmp_path / "b", log=lambda line: None)
    assert resumed.resume() and resumed.step == 3
    resumed.train()
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_exported_model_loads_in_the_engine(tmp_path, tok):
    trainer = Trainer(toy(2), TEXTS, tok, tmp_path, log=lambda line: None)
    trainer.train()
    tok.hf.save(str(tmp_path / "tok.json"))
    export(trainer, tmp_path / "tok.json", tmp_path / "model")
    from dg_lsp import engine
    eng = engine.load(tmp_path / "model", device="cpu")
    assert isinstance(eng, Engine) and eng.cfg.family.name == "dg"
    assert len(eng.complete(engine.InfillRequest.at_cursor("def main(", "):\n", 4)).texts) == 1


def test_warm_start_begins_from_the_given_weights(tmp_path, tok):
    (tmp_path / "a").mkdir()
    earlier = Trainer(toy(3), TEXTS, tok, tmp_path / "a", log=lambda line: None)
    earlier.train()
    earlier.save()
    warm = Trainer(toy(3, seed=5, init=str(tmp_path / "a" / "checkpoint")), TEXTS, tok, tmp_path / "b",
                   log=lambda line: None)
    cold = Trainer(toy(3, seed=5), TEXTS, tok, tmp_path / "c", log=lambda line: None)
    for (name, a), (_, w), (_, c) in zip(earlier.model.state_dict().items(), warm.model.state_dict().items(),
                                         cold.model.state_dict().items()):
        assert torch.equal(a, w), name
    assert not all(torch.equal(a, c) for a, c in zip(earlier.model.parameters(), cold.model.parameters()))
