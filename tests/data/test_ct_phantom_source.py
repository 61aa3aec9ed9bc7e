"""Head-CT phantoms as a data source generated in the run (issue 29): ``phantom:modality=ct`` and
``data: {source: phantom, modality: ct, depth: N}`` give volumes on the CT grid, the same heads as
``medrobust data phantom --modality ct`` writes, with their measured noise; settings that mean
nothing for the source are refused with the fix."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data.errors import DataSourceError
from medrobust.data.phantom.ct_head import ct_head_params, render_ct_head
from medrobust.data.sources import open_dataset
from medrobust.data.stored_grid import CT_HU
from medrobust.evaluation.config_sections import DataConfig


def test_the_ct_phantom_source_gives_the_generated_heads_in_hu():
    ds = open_dataset("phantom:modality=ct,per_class=2,size=16,depth=4,seed=5")
    assert ds.grid is CT_HU and ds.classes == ["normal", "haemorrhage", "infarct"] and len(ds) == 6
    image, label, name = ds[4]
    assert image.shape == (1, 4, 16, 16) and label == 1 and name == "ct-000004"
    hu = render_ct_head(ct_head_params(5, 4, 1), 16, 4)
    np.testing.assert_allclose(CT_HU.to_units(image[0].double().numpy()), hu, atol=1e-3)  # integer HU, as written
    assert 5.0 <= ds.subset("test").known_noise_std() <= 8.5  # the heads' white-matter noise
    slices = open_dataset("phantom", modality="ct", per_class=1, size=16, depth=1)
    assert slices[0][0].shape == (1, 16, 16)  # depth 1: axial slices through the finding
    assert open_dataset("phantom:per_class=1,size=32").known_noise_std() is None  # radiographs: not known


def test_settings_that_mean_nothing_for_the_source_are_refused():
    with pytest.raises(DataSourceError, match="modality 'mri'"):
        open_dataset("phantom:modality=mri")
    with pytest.raises(DataSourceError, match="depth is for CT phantoms"):
        open_dataset("phantom:depth=8")
    with pytest.raises(ValueError, match="modality ct chooses the phantoms.*set source: phantom"):
        DataConfig(source="scans/", modality="ct")
    with pytest.raises(ValueError, match="depth 8 is the slices of CT phantoms; add modality: ct"):
        DataConfig(depth=8)
    assert DataConfig(modality="ct", depth=8).depth == 8
