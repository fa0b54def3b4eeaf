"""dg-lsp: the language server (this package's own modules) and, under the same namespace, the
diffusion engine (`dg_lsp.engine`), its kernels (`dg_lsp.kernels`) and the training pipeline
(`dg_lsp.training`).

Those three live in top-level folders of the source tree (engine/, kernels/, training/) and are
installed as subpackages of dg_lsp (pyproject's package-dir), so they never collide with other
distributions' generic top-level names (PyPI has a `kernels`). Run from a checkout without installing
(`PYTHONPATH=.`, as on the GPU machines), the checkout itself is added to this package's search path so
the same import names resolve to the same folders.
"""

from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "engine" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - a package's __path__ is set by the import system
