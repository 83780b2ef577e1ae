"""Teachers of the distillation task (§3.3, task 4): a classifier's pre-softmax features of each object crop.

The paper distils an ImageNet ResNet-50 (1000 pre-softmax features) and the detector's class probabilities.
No package here ships ResNet-50 weights, so the classifier teacher comes from a user path: a TorchScript file
whose module maps ``float32 [N, 3, S, S]`` RGB crops in [0, 1] (the student's 64x64 middle boxes) to
``[N, D]`` features. Any resizing to 224x224 and ImageNet normalisation belong inside that module, e.g.::

    class Teacher(torch.nn.Module):            # exported once, where torchvision is available
        def __init__(self):
            super().__init__()
            self.net = torchvision.models.resnet50(weights="IMAGENET1K_V2").eval()
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        def forward(self, x):
            x = torch.nn.functional.interpolate(x, size=224, mode="bilinear", align_corners=False)
            return self.net((x - self.mean) / self.std)
    torch.jit.script(Teacher()).save("resnet50_teacher.pt")

Without a teacher the distillation task must be dropped from ``SsmtlConfig.tasks`` (or ``teacher_dim=0``
distils the detector probabilities only); nothing falls back silently. Tests use :class:`RandomTeacher`, a
tiny randomly initialised network selected explicitly with ``teacher="random"``.

Example:
    >>> import torch
    >>> teacher = load_teacher("random", dim=10)
    >>> teacher(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RANDOM_TEACHER", "RandomTeacher", "load_teacher", "teacher_features"]

RANDOM_TEACHER = "random"


class RandomTeacher(nn.Module):
    """A tiny, randomly initialised (seeded) stand-in teacher for tests and smoke runs only."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 5, stride=4, padding=2)  # (N, 8, S/4, S/4)
        self.fc = nn.Linear(8, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` crops in [0, 1] -> ``(N, dim)`` features."""
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def load_teacher(path: str, dim: int | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Load the classifier teacher.

    Args:
        path: TorchScript file, or ``"random"`` for :class:`RandomTeacher` (tests only).
        dim: Expected feature length; checked on a dummy input when given (required for ``"random"``).
        device: Where the teacher runs.

    Raises:
        ValueError: the file cannot be loaded as TorchScript or its output is not ``[N, dim]``.
    """
    if path == RANDOM_TEACHER:
        if not dim:
            raise ValueError("the random teacher needs dim (SsmtlConfig.teacher_dim)")
        return RandomTeacher(dim).to(device).eval()
    try:
        teacher = torch.jit.load(path, map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as exc:
        raise ValueError(f"cannot load teacher {path!r} as TorchScript: {exc}") from exc
    if dim is not None:
        with torch.inference_mode():
            out = teacher(torch.rand(1, 3, 64, 64, device=device))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, dim):
            raise ValueError(f"teacher {path!r} must map [N, 3, 64, 64] to [N, {dim}], got "
                             f"{getattr(out, 'shape', type(out))}")
    return teacher


@torch.inference_mode()
def teacher_features(teacher: nn.Module, crops: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Teacher outputs for ``(N, 3, S, S)`` crops in [0, 1], in batches; float32 ``(N, D)`` on the CPU."""
    device = next(iter(teacher.parameters()), torch.empty(0)).device
    outs = [teacher(chunk.to(device)).float().cpu() for chunk in crops.split(batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0, 0)
