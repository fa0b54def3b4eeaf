"""The training speed paths agree with the reference path, resume stays exact on them, and the GPU
preset's pipeline (train, shard, export, evaluate) runs end to end on CPU with a tiny override."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import pytest
import torch

from dg_lsp.engine.testing import SAMPLE_CODE, tiny_tokenizer
from dg_lsp.engine.tokenizer import Tokenizer
from dg_lsp.training.corpus import STDLIB, default_stdlib_root
from dg_lsp.training.examples import ExampleSpec
from dg_lsp.training.presets import PRESETS, parameter_count
from dg_lsp.training.train import ModelShape, TrainConfig, Trainer, export, lr_at, main

TEXTS = [SAMPLE_CODE, SAMPLE_CODE.replace("total", "count").replace("name", "path"), SAMPLE_CODE.upper()]
QUIET = dict(log=lambda line: None)


@pytest.fixture(scope="module")
def tok():
    hf = tiny_tokenizer(["<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>"], vocab_size=320)
    hf.encode_special_tokens = True
    return Tokenizer(hf)


def toy(steps: int, **kw) -> TrainConfig:
    shape = ModelShape(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=128, vocab=320)
    return TrainConfig(shape=shape, example=ExampleSpec(seq_len=96, max_middle=16, window_chars=600), batch=8,
                       steps=steps, lr=3e-3, warmup=2, **({"log_every": 100, "save_every": 1000} | kw))


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).float().pow(2).mean().sqrt() / b.float().pow(2).mean().sqrt().clamp_min(1e-12))


def test_bf16_autocast_steps_agree_with_fp32(tmp_path, tok):
    """Same seed, same data: bf16 autocast tracks fp32 within bf16's precision (8 bits of mantissa, ~0.4%
    per rounding). Tolerances: loss within 2% per step; weights after 4 steps within 1% relative RMS
    (the Adam updates are lr-sized, ~1% of the weights, and the bf16 run's differ only slightly)."""
    runs = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(toy(4, precision=precision), TEXTS, tok, tmp_path / precision, **QUIET)
        (tmp_path / precision).mkdir()
        runs[precision] = (trainer.train(), trainer.model)
    for h32, h16 in zip(runs["fp32"][0], runs["bf16"][0]):
        assert h16["loss"] == pytest.approx(h32["loss"], rel=0.02), (h32, h16)
    for (name, p32), (_, p16) in zip(runs["fp32"][1].named_parameters(), runs["bf16"][1].named_parameters()):
        assert p16.dtype == torch.float32, f"{name}: master weights must stay fp32"
        assert rel_rms(p16.detach(), p32.detach()) < 0.01, name


@pytest.mark.parametrize("impl", ["foreach", "loop"])
def test_adamw_implementations_agree(tmp_path, tok, impl):
    fused = Trainer(toy(3, optimizer="fused"), TEXTS, tok, tmp_path / "f", **QUIET)
    other = Trainer(toy(3, optimizer=impl), TEXTS, tok, tmp_path / impl, **QUIET)
    for t in (fused, other):
        t.out.mkdir()
        t.train()
    for (name, a), (_, b) in zip(fused.model.named_parameters(), other.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_exact_on_the_fast_paths(tmp_path, tok, precision):
    cfg = toy(6, precision=precision, optimizer="fused")
    (tmp_path / "a").mkdir()
    straight = Trainer(cfg, TEXTS, tok, tmp_path / "a", **QUIET)
    straight.train()
    (tmp_path / "b").mkdir()
    first = Trainer(cfg, TEXTS, tok, tmp_path / "b", **QUIET)
    first.train(until=4)
    first.save()
    resumed = Trainer(cfg, TEXTS, tok, tmp_path / "b", **QUIET)
    assert resumed.resume() and resumed.step == 4
    resumed.train()
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(straight.opt.state[p]["exp_avg_sq"], resumed.opt.state[q]["exp_avg_sq"])


def test_data_workers_build_the_same_batches(tmp_path, tok):
    cfg = toy(3)
    inline = Trainer(cfg, TEXTS, tok, tmp_path / "0", **QUIET)
    workers = Trainer(cfg, TEXTS, tok, tmp_path / "2", workers=2, **QUIET)
    for t in (inline, workers):
        t.out.mkdir()
    for a, b in zip(inline.batches(3), workers.batches(3)):
        assert all(x.equal(y) for x, y in zip(a, b))


def test_wall_time_guard_stops_early_and_checkpoints_are_still_taken(tmp_path, tok):
    (tmp_path / "run").mkdir()
    trainer = Trainer(toy(50), TEXTS, tok, tmp_path / "run", **QUIET)
    history = trainer.train(max_seconds=0.0)  # gone at once: exactly one step runs
    assert len(history) == 1 and trainer.step == 1


def test_schedule_fitted_to_the_time_left_ends_early_and_resumes_with_that_length(tmp_path, tok):
    (tmp_path / "run").mkdir()
    trainer = Trainer(toy(40, save_every=2), TEXTS, tok, tmp_path / "run", **QUIET)
    trainer.train(until=2)
    trainer.fit_schedule(seconds_left=10.0, seconds_per_step=1.0, margin=0.5)  # 5 more steps fit
    assert trainer.cfg.steps == 7 and trainer.fitted_from == 40
    trainer.fit_schedule(seconds_left=1e6, seconds_per_step=1.0)  # never lengthens
    assert trainer.cfg.steps == 7
    history = trainer.train()
    # the cosine now decays over 7 steps: the last step's rate is the short schedule's, far below the long one's
    assert trainer.step == 7 and history[-1]["lr"] == pytest.approx(lr_at(6, trainer.cfg))
    assert history[-1]["lr"] < 0.3 * trainer.cfg.lr < lr_at(6, toy(40))
    trainer.save()
    resumed = Trainer(toy(40, save_every=2), TEXTS, tok, tmp_path / "run", **QUIET)  # the command line's 40 steps
    assert resumed.resume() and resumed.step == 7 and resumed.cfg.steps == 7
    assert resumed.train() == []  # already at the end of its fitted schedule


def test_export_refuses_a_tensor_bigger_than_a_shard(tmp_path, tok):
    trainer = Trainer(toy(1), TEXTS, tok, tmp_path, **QUIET)
    tok.hf.save(str(tmp_path / "tok.json"))
    with pytest.raises(ValueError, match="more than a 1,000-byte shard"):
        export(trainer, tmp_path / "tok.json", tmp_path / "model", max_shard_bytes=1000)


def test_gpu_preset_is_about_30m_parameters():
    preset = PRESETS["gpu-30m"]
    assert 25e6 <= parameter_count(preset.train.shape) <= 35e6
    assert preset.train.precision == "bf16" and preset.max_minutes is not None and preset.max_minutes < 9


def stdlib_manifest(path: Path) -> None:
    """A pinned corpus of real files of this interpreter's stdlib: a few train modules, json held out."""
    root = default_stdlib_root()
    entries = [("train", rel) for rel in ("textwrap.py", "shlex.py", "fnmatch.py", "string.py", "colorsys.py")]
    entries += [("held_out", rel) for rel in ("json/__init__.py", "json/decoder.py")]
    files = []
    for split, rel in entries:
        blob = (root / rel).read_bytes()
        files.append({"split": split, "package": STDLIB, "version": platform.python_version(), "license": "PSF-2.0",
                      "path": rel, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)})
    data = {"format": "dg-corpus-manifest/1", "python": platform.python_version(),
            "held_out": {"stdlib_modules": ["json"], "distributions": []}, "totals": {}, "files": files}
    path.write_text(json.dumps(data))


def test_gpu_preset_dry_run_on_cpu_trains_shards_exports_and_evaluates(tmp_path, tok, capsys):
    stdlib_manifest(tmp_path / "manifest.json")
    tok.hf.save(str(tmp_path / "tok.json"))
    limit_mib = 0.05  # ~51 KB: the tiny model's bf16 weights span several shards
    rc = main(["--preset", "gpu-30m", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "model"),
               "--device", "cpu", "--manifest", str(tmp_path / "manifest.json"), "--tokenizer", str(tmp_path / "tok.json"),
               "--hidden", "64", "--layers", "2", "--heads", "2", "--kv-heads", "1", "--intermediate", "128",
               "--seq-len", "128", "--batch", "4", "--steps", "3", "--warmup", "1", "--workers", "0",
               "--max-shard-mib", str(limit_mib), "--eval-single", "2", "--eval-multi", "1", "--eval-ident", "2",
               "--eval-steps", "2"])
    assert rc == 0
    shards = sorted((tmp_path / "model").glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and all(s.stat().st_size <= limit_mib * 2**20 for s in shards)
    index = json.loads((tmp_path / "model" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    meta = json.loads((tmp_path / "run" / "checkpoint" / "trainer.json").read_text())
    assert meta["step"] == 3 and meta["config"]["precision"] == "bf16" and meta["config"]["batch"] == 4
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {k: report["results"][k]["n"] for k in report["results"]} == {"single": 2, "multi": 1, "ident": 2}
    assert 0.0 <= report["summary"]["ident"]["next_ident"] <= 1.0
    assert "baseline_next_ident" in report["summary"]["ident"]
    from dg_lsp import engine

    eng = engine.load(tmp_path / "model", device="cpu")
    assert eng.cfg.hidden_size == 64


def test_profile_entry_point_prints_where_the_time_goes(tmp_path, capsys):
    from dg_lsp.training.profile_steps import main as profile_main

    tokenizer = Path(__file__).parents[2] / "models" / "dg-coder-tiny" / "tokenizer.json"
    assert profile_main(["--batch", "1", "--steps", "1", "--warmup-steps", "0", "--rows", "5",
                         "--tokenizer", str(tokenizer), "--out", str(tmp_path), "--trace", str(tmp_path / "t.json")]) == 0
    table = capsys.readouterr().out
    assert "Self CPU" in table and "aten::" in table
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]
