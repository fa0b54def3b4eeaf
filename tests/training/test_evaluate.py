"""The evaluation's task maker, exact-match rule, baseline and context fitting."""

from dg_lsp.training.evaluate import Task, baseline_answer, exact, frequency_baseline, make_tasks, similarity

FILE = ("import os\n\n\ndef f(x):\n    if x:\n        return os.path.join(x, 'a')\n    return None\n\n\n"
        "class A:\n    def g(self):\n        self.value = 1\n        return self.value\n")


def test_tasks_cut_at_the_indentation_and_rejoin_to_the_file():
    tasks = make_tasks([("m.py", FILE)], n_single=5, n_multi=3, seed=1)
    kinds = [t.kind for t in tasks]
    assert kinds.count("single") == 5 and 1 <= kinds.count("multi") <= 3  # the file has few multi-line spots
    for t in tasks:
        assert t.prefix + t.middle + t.suffix == FILE
        assert t.middle and not t.middle[0].isspace() and not t.middle.endswith("\n")
        assert t.prefix == "" or t.prefix.endswith("\n") or t.prefix.rsplit("\n", 1)[-1].isspace()
        assert (t.kind == "single") == ("\n" not in t.middle)
    assert make_tasks([("m.py", FILE)], 5, 3, seed=1) == tasks  # deterministic


def test_exact_match_rules():
    single = Task("m.py", "    ", "return x", "\n", "single")
    assert exact(single, "return x\n    y = 2") and exact(single, "return x  ")
    assert not exact(single, "return y")
    multi = Task("m.py", "    ", "a = 1\n    b = 2", "\n", "multi")
    assert exact(multi, "a = 1\n    b = 2\n") and not exact(multi, "a = 1")


def test_similarity_gives_partial_credit_on_what_exact_compares():
    single = Task("m.py", "    ", "return x", "\n", "single")
    assert similarity(single, "return x\n    y = 2") == 1.0  # only the first line counts, as in exact
    assert 0.5 < similarity(single, "return y") < 1.0
    assert similarity(single, "") == 0.0


def test_frequency_baseline_answers_the_commonest_line():
    line = frequency_baseline(["x = 1\nreturn x\n", "return x\ny = 2\n"])
    assert line == "return x"
    multi = Task("m.py", "def f():\n    ", "a\n    b\n    c", "\n", "multi")
    assert baseline_answer(multi, line) == "return x\n    return x\n    return x"
