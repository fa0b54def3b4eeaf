import pytest

from dg_lsp.engine.testing import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """One random-weight checkpoint per family, written once per test session."""
    root = tmp_path_factory.mktemp("ckpt")
    return {fam: write_tiny_checkpoint(root / fam, fam, seed=1) for fam in ("dg", "dream", "llada", "open-dcoder")}
