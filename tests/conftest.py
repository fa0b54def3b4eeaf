"""Process-wide test setup.

Without a GPU, Triton kernels run under the interpreter. TRITON_INTERPRET is read when a kernel is
decorated (module import), so it must be set before anything imports kernels.* or triton; a root
conftest is loaded before any test module. torch is deliberately not imported here (LSP tests stay
light): no NVIDIA device node means no CUDA. tests/kernels/conftest.py repeats the check with torch.
"""

import os

if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
