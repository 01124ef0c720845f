"""secant_ext: optimizers whose learning rate sets itself from a regularized stochastic
secant equation (A-SGD, A-SGDM, A-SIGNSGD, and SecantAdam along Adam's direction), with fused Triton (CUDA) and C++ (CPU) kernels
and an eager reference every fast path is tested against."""
from ._backends import cpp_available, triton_available
from .adam import SecantAdam
from ._base import SecantOptimizer
from .contexts import frozen_batchnorm
from ._stats import SecantAdamStats, SecantStats
from .history import StepHistory
from .probes import slice_probe
from .sgd import SecantSGD
from .sgdm import SecantSGDM
from .signsgd import SecantSignSGD

__version__ = "0.1.0"

__all__ = ["SecantOptimizer", "SecantAdam", "SecantSGD", "SecantSGDM", "SecantSignSGD", "SecantStats",
           "SecantAdamStats",
           "StepHistory", "frozen_batchnorm", "slice_probe", "cpp_available",
           "triton_available", "backend_for", "__version__"]


def backend_for(device="cpu", backend: str = "auto") -> str:
    """The name of the backend that ``backend`` resolves to for tensors on ``device``."""
    import torch

    from . import _backends
    _backends.validate_backend(backend)
    return _backends.resolve(backend, torch.device(device)).name
