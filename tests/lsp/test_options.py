"""Options: nested dataclasses from JSON; each bad key is named, falls back alone to its default."""

from __future__ import annotations

from dg_lsp.options import Options, parse_options, settings_section


def test_defaults_when_nothing_is_given():
    options, problems = parse_options(None)
    assert options == Options() and problems == []


def test_camel_and_snake_case_keys_structure_nested_dataclasses():
    options, problems = parse_options({
        "backend": "fake",
        "model": {"path": "/models/dg", "device": "cuda:1", "dtype": "bfloat16"},
        "sampler": {"steps": 16, "topP": 0.9, "confidence": "entropy"},
        "inline": {"line_canvas": 8, "blockCanvas": 96},
        "fake": {"stepDelayMs": 5, "responses": {"a": "b"}},
    })
    assert problems == []
    assert options.backend == "fake"
    assert options.model.path == "/models/dg" and options.model.device == "cuda:1"
    assert options.sampler.steps == 16 and options.sampler.top_p == 0.9 and options.sampler.confidence == "entropy"
    assert options.inline.line_canvas == 8 and options.inline.block_canvas == 96
    assert options.fake.step_delay_ms == 5.0 and options.fake.responses == {"a": "b"}


def test_each_invalid_key_is_named_with_the_expected_value_and_only_it_falls_back():
    options, problems = parse_options({
        "sampler": {"steps": 0, "temperature": 0.5},
        "inline": {"enable": "false"},
        "rewrite": {"strength": 1.5},
        "holes": {"marker": ""},
        "context": {"budget": 3.5},
    })
    assert options.sampler.steps == 8 and options.sampler.temperature == 0.5
    assert options.inline.enable is True
    assert options.rewrite.strength == 0.5
    assert options.holes.marker == "<FILL>"
    assert options.context.budget == 1024
    joined = "\n".join(problems)
    assert "sampler.steps = 0 is invalid: expected an integer 1..1024" in joined
    assert "inline.enable = 'false' is invalid: expected true or false" in joined
    assert "rewrite.strength = 1.5 is invalid: expected a number in [0, 1]" in joined
    assert "holes.marker" in joined and "context.budget" in joined
    assert len(problems) == 5


def test_unknown_keys_and_wrong_shapes():
    options, problems = parse_options({"sampler": [1, 2], "colour": "red", "backend": "cloud"})
    assert options == Options()
    assert any("option sampler = [1, 2] is invalid: expected an object" in p for p in problems)
    assert any("unknown option colour: expected one of backend, model" in p for p in problems)
    assert any("option backend = 'cloud' is invalid: expected engine, fake or remote" in p for p in problems)
    _, problems = parse_options(["not", "an", "object"])
    assert problems and "expected an object" in problems[0]


def test_integral_floats_are_integers_but_booleans_are_not():
    options, problems = parse_options({"sampler": {"steps": 12.0, "seed": True}})
    assert options.sampler.steps == 12
    assert options.sampler.seed == 0 and "sampler.seed" in problems[0]


def test_settings_section_unwraps_the_client_section():
    assert settings_section({"dg-lsp": {"backend": "fake"}}) == {"backend": "fake"}
    assert settings_section({"dgLsp": {"backend": "fake"}}) == {"backend": "fake"}
    assert settings_section({"backend": "fake"}) == {"backend": "fake"}


def test_sampler_config_and_backend_key():
    options, _ = parse_options({"sampler": {"steps": 4}, "rewrite": {"strength": 0.25}})
    config = options.sampler_config()
    assert config.steps == 4 and config.strength == 0.25 and config.ends_in_order
    assert not parse_options({"sampler": {"endsInOrder": False}})[0].sampler_config().ends_in_order
    other, _ = parse_options({"sampler": {"steps": 5}})
    assert options.backend_key() == other.backend_key()  # sampler changes do not reload the model
    moved, _ = parse_options({"model": {"device": "cpu"}})
    assert moved.backend_key() != options.backend_key()
    quantized, _ = parse_options({"model": {"quantize": "int8"}})
    assert quantized.model.quantize == "int8" and quantized.backend_key() != options.backend_key()


def test_variable_length_options_reach_the_sampler_config_and_bad_ones_are_named():
    options, problems = parse_options({"sampler": {"maxCanvas": 128, "expandBudget": 16}})
    assert problems == []
    config = options.sampler_config()
    assert config.max_canvas == 128 and config.expand_budget == 16
    default = Options().sampler_config()
    assert default.max_canvas == 64 and default.expand_budget == 0  # DreamOn's eval settings
    options, problems = parse_options({"sampler": {"maxCanvas": 0, "expandBudget": -1}})
    assert options.sampler_config().max_canvas == 64 and options.sampler_config().expand_budget == 0
    assert problems == ["option sampler.maxCanvas = 0 is invalid: expected an integer 1..4096; using the default 64",
                        "option sampler.expandBudget = -1 is invalid: expected an integer 0..4096 (0: maxCanvas); "
                        "using the default 0"]


def test_canvas_length_option_reaches_the_sampler_config_and_a_bad_one_is_named():
    assert Options().sampler_config().canvas_length == "fixed"
    options, problems = parse_options({"sampler": {"canvasLength": "probe"}})
    assert problems == [] and options.sampler_config().canvas_length == "probe"
    options, problems = parse_options({"sampler": {"canvasLength": "guess"}})
    assert options.sampler_config().canvas_length == "fixed"
    assert len(problems) == 1 and "sampler.canvasLength" in problems[0] and "fixed or probe" in problems[0]


def test_speculate_is_on_by_default_and_takes_only_booleans():
    assert Options().inline.speculate is True
    options, problems = parse_options({"inline": {"speculate": False}})
    assert options.inline.speculate is False and problems == []
    options, problems = parse_options({"inline": {"speculate": "no"}})
    assert options.inline.speculate is True and problems == [
        "option inline.speculate = 'no' is invalid: expected true or false; using the default True"]


def test_the_server_hands_the_variable_length_options_to_the_jobs_it_submits():
    from dg_lsp.engine.request import InfillRequest
    from dg_lsp.server import DgServer

    server = DgServer()
    try:
        server.apply_options({"backend": "fake", "sampler": {"maxCanvas": 96, "expandBudget": 8}})
        job = server.make_job(("inline", "file:///a.py"), InfillRequest.at_cursor("x = ", "\n", 8))
        assert (job.sampler.max_canvas, job.sampler.expand_budget) == (96, 8)
        server.apply_options({"backend": "fake", "sampler": {"maxCanvas": 32}})
        other = server.make_job(("inline", "file:///a.py"), InfillRequest.at_cursor("x = ", "\n", 8))
        assert other.sampler.max_canvas == 32 and other.cache_key != job.cache_key  # a result of one is not the other's
    finally:
        server.scheduler.stop()
