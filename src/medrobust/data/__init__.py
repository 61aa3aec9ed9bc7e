"""Where images come from: synthetic phantoms, class-per-folder trees, NIH ChestX-ray14,
MedMNIST ``.npz`` files and DICOM, all as :class:`~medrobust.data.dataset.ImageDataset`
objects that yield float32 (1, H, W) images in [0, 1].

The loaders live in their own modules (``folders``, ``nih``, ``medmnist``, ``dicom``,
``io``, ``splits``); import them from there. The entry points:

* :func:`~medrobust.data.sources.open_dataset` — any source from one string (``"phantom"``, a
  folder, ``"nih:CSV,IMAGES_DIR"``, ``"medmnist:FILE.npz"``), as the CLI and config files name it;
* :func:`~medrobust.data.folders.folder_dataset`, :func:`~medrobust.data.nih.nih_dataset`,
  :func:`~medrobust.data.medmnist.medmnist_dataset`, :class:`~medrobust.data.phantom.PhantomDataset`
  — one source each, with all its options;
* :func:`~medrobust.data.io.read_image`, :func:`~medrobust.data.io.write_png`,
  :func:`~medrobust.data.dicom.read_dicom`, :func:`~medrobust.data.dicom.write_dicom` — one file;
* :func:`~medrobust.data.splits.stratified_split`, :func:`~medrobust.data.splits.patient_grouped_split`;
* :mod:`~medrobust.data.similarity` — L-inf, L2, SSIM and PSNR between image stacks.
"""
