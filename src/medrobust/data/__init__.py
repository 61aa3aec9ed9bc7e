"""Where images come from: synthetic phantoms, class-per-folder trees, NIH ChestX-ray14,
MedMNIST ``.npz`` files and DICOM, all as :class:`~medrobust.data.dataset.ImageDataset`
objects that yield float32 (1, H, W) images in [0, 1].

The loaders live in their own modules (``folders``, ``nih``, ``medmnist``, ``dicom``,
``io``, ``splits``); import them from there.
"""
