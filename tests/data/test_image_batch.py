"""The one image-batch check: who refused, the shape or range expected, what was given."""

from __future__ import annotations

import pytest
import torch

from medrobust.data.image_batch import ImageBatchError, check_image_batch


def test_a_float_batch_in_range_passes() -> None:
    check_image_batch(torch.rand(2, 1, 4, 4), "x", unit_range=True)
    check_image_batch(torch.rand(2, 3, 4, 4, dtype=torch.float64), "x", channels=(1, 3))
    check_image_batch(torch.empty(0, 1, 4, 4), "x", unit_range=True)
    check_image_batch(torch.full((1, 1, 2, 2), 1 + 1e-6), "x", unit_range=True)  # float rounding
    check_image_batch(torch.rand(2, 1, 3, 4, 4), "x", channels=1, unit_range=True)  # volumes (B, C, D, H, W)


@pytest.mark.parametrize(("bad", "kwargs", "message"), [
    ([[0.5]], {}, r"the pgd attack: expected a torch\.Tensor of images \(B, C, H, W\) or volumes \(B, C, D, H, W\), got list"),
    (torch.rand(2, 8, 8), {},
     r"the pgd attack: expected images of shape \(B, C, H, W\) or volumes \(B, C, D, H, W\), got shape \(2, 8, 8\); add"),
    (torch.rand(2, 3, 8, 8), {"channels": 1},
     r"expected images of shape \(B, 1, H, W\) or volumes \(B, 1, D, H, W\), got shape \(2, 3, 8, 8\)"),
    (torch.rand(2, 2, 8, 8), {"channels": (1, 3)}, r"\(B, 1, H, W\) or \(B, 3, H, W\)"),
    (torch.rand(1, 1, 2, 2, 2, 2), {}, r"got shape \(1, 1, 2, 2, 2, 2\)$"),
    (torch.rand(1, 1, 2, 4, 4), {"volumes": "JPEG compresses 2-D images"},
     r"^the pgd attack: refuses volumes \(B, C, D, H, W\), got shape \(1, 1, 2, 4, 4\): JPEG compresses 2-D images$"),
    (torch.rand(2, 8, 8), {"volumes": "2-D only"}, r"expected images of shape \(B, C, H, W\), got shape \(2, 8, 8\); add"),
    (torch.zeros(1, 1, 4, 4, dtype=torch.uint8), {}, r"expected float images in \[0, 1\], got dtype torch\.uint8"),
    (torch.full((1, 1, 4, 4), 255.0), {"unit_range": True}, r"must lie in \[0, 1\].*got values in \[255, 255\]"),
    (torch.full((1, 1, 4, 4), float("nan")), {"unit_range": True}, r"must lie in \[0, 1\]"),
    (torch.full((1, 1, 4, 4), -1e-6), {"unit_range": True, "tolerance": 0.0}, r"must lie in \[0, 1\]"),
])
def test_refusals_name_the_caller_and_the_expected_shape(bad, kwargs, message) -> None:
    with pytest.raises(ImageBatchError, match=message) as info:
        check_image_batch(bad, "the pgd attack", **kwargs)
    assert str(info.value).startswith("the pgd attack: ")
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
