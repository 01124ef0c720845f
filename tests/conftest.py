"""Test-wide setup. Triton's interpreter must be chosen before anything imports triton, so
this runs first: CPU-only machines (and CI) check the Triton kernels on CPU tensors under
``TRITON_INTERPRET=1``; ``bench/gpu_check.sh`` sets ``TRITON_INTERPRET=0`` to compile them
for real and ``SECANT_TEST_DEVICES=cuda``. Nothing here touches a GPU at import time."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def triton_devices():
    """Devices the Triton kernels are tested on: ``SECANT_TEST_DEVICES`` (comma-separated),
    by default CPU under the interpreter and CUDA when compiling for real."""
    default = "cpu" if os.environ["TRITON_INTERPRET"] == "1" else "cuda"
    return [d.strip() for d in os.environ.get("SECANT_TEST_DEVICES", default).split(",")
            if d.strip()]


@pytest.fixture(params=triton_devices())
def triton_device(request):
    return request.param
