"""How a worker on another machine gets the run's models: the driver ships them.

A worker needs no access to the driver's files. For each model the driver packs what it loaded
from — the user's model file (or folder) with its load options, or the checkpoint folder a
model trained in this run was saved to — as bytes; the worker writes them to a private
temporary folder and loads them with the same loader and the same safety rules (a pickle is
still refused unless the configuration trusts it). A model given in memory (``mr.evaluate(
model=...)``) is shipped as the object itself, through Ray's serialisation: it came from the
user's own process, not from an untrusted file.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from medrobust.models.contract import ModelContract

MAX_SHIPPED_BYTES = 4 << 30
"""A model larger than this (4 GiB) is refused for shipping: put it on shared storage instead."""


@dataclass
class ModelSource:
    """One model as shipped to workers: its files with the user's contract, or the in-memory module.

    Build one with :meth:`from_path` or :meth:`from_module`; a worker loads it with
    :meth:`materialise`.

    Args:
        name: the model's name in the run (``"model"`` or a surrogate's).
        files: relative name -> bytes of the file, or of every file of the folder. Default: empty.
        root: the file's name when a single file was packed; ``""`` (the default) for a folder.
        contract: the user's declared contract; None (the default) for a medrobust checkpoint
            folder.
        module: the model itself, when given in memory. Default None.
    """

    name: str
    files: dict[str, bytes] = field(default_factory=dict)
    root: str = ""
    contract: ModelContract | None = None
    module: nn.Module | None = None

    @classmethod
    def from_path(cls, name: str, path: str | Path, contract: ModelContract | None = None) -> "ModelSource":
        """Pack the file, or every file of the folder, at ``path``.

        Args:
            name: the model's name in the run.
            path: the model file, or a checkpoint folder.
            contract: the user's declared contract; None means a medrobust checkpoint folder.

        Returns:
            The source, its files read into memory.

        Raises:
            FileNotFoundError: nothing to ship at ``path``.
            ValueError: the files exceed :data:`MAX_SHIPPED_BYTES` (put them on shared storage).
        """
        path = Path(path)
        members = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        if not members:
            raise FileNotFoundError(f"{name}: nothing to ship to the workers at {path}")
        total = sum(p.stat().st_size for p in members)
        if total > MAX_SHIPPED_BYTES:
            raise ValueError(f"{name}: {path} is {total / 2**30:.1f} GiB, more than the driver ships to workers "
                             f"({MAX_SHIPPED_BYTES >> 30} GiB)")
        base = path.parent if path.is_file() else path
        files = {p.relative_to(base).as_posix(): p.read_bytes() for p in members}
        return cls(name=name, files=files, root=path.name if path.is_file() else "", contract=contract)

    @classmethod
    def from_module(cls, name: str, module: nn.Module) -> "ModelSource":
        """A model held in memory, shipped as the object itself (Ray serialises it)."""
        return cls(name=name, module=module)

    def materialise(self, device: torch.device) -> nn.Module:
        """The model, loaded in this (worker) process with the same loader and safety rules as
        the driver's (a pickle is still refused unless the contract trusts it).

        Args:
            device: where to load it.

        Returns:
            The model in eval mode on ``device``. Its files live in a temporary folder only while
            it loads.

        Raises:
            ValueError: a shipped file name that leaves its folder, or what the loader refuses.
        """
        from medrobust.models.checkpoint import load_checkpoint
        from medrobust.models.loading import load_classifier

        if self.module is not None:
            return self.module.to(device).eval()
        # the files live only while the model loads (every format reads its file whole), so a
        # worker leaves nothing behind in its temporary folder
        with tempfile.TemporaryDirectory(prefix=f"medrobust-{self.name}-") as tmp:
            folder = Path(tmp)
            for rel, data in self.files.items():
                target = (folder / rel).resolve()
                if folder.resolve() not in target.parents:
                    raise ValueError(f"{self.name}: shipped file name {rel!r} leaves its folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            where = folder / self.root if self.root else folder
            if self.contract is None:
                return load_checkpoint(where, device)
            return load_classifier(where, self.contract, device=device)
