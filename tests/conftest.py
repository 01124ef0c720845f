"""Test-wide setup. Triton's interpreter must be chosen before anything imports triton, so
this runs first: CPU-only machines (and CI) check the Triton kernels on CPU tensors under
``TRITON_INTERPRET=1``; ``bench/gpu_check.sh`` sets ``TRITON_INTERPRET=0`` to compile them
for real and ``SECANT_TEST_DEVICES=cuda``. Nothing here touches a GPU at import time."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from numerics import triton_devices  # noqa: E402  (after the environment is set)


@pytest.fixture(params=triton_devices())
def triton_device(request):
    return request.param
