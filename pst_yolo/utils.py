"""Small helpers shared across pst_yolo."""

from __future__ import annotations

from pathlib import Path

__all__ = ["resource_path"]

_PKG = Path(__file__).resolve().parent


def resource_path(*parts: str) -> Path:
    """Locate a file shipped with pst_yolo, such as ``cfg/datasets/shapes.yaml`` or ``datasets.yaml``.

    A wheel carries these resources inside the package (see ``force-include`` in pyproject.toml); a source or
    editable checkout keeps them at the repository root, one level above the package.

    Args:
        *parts: Path components relative to the resource root, e.g. ``("cfg", "datasets", "shapes.yaml")``.

    Returns:
        The existing resource path, preferring the in-package copy.

    Raises:
        FileNotFoundError: If the resource is in neither place.

    Examples:
        >>> resource_path("datasets.yaml").name
        'datasets.yaml'
    """
    for base in (_PKG, _PKG.parent):
        path = base.joinpath(*parts)
        if path.exists():
            return path
    raise FileNotFoundError(
        f"pst_yolo resource '{'/'.join(parts)}' found neither in the package ({_PKG}) nor in a source checkout "
        f"({_PKG.parent}); the installation is incomplete, reinstall pst-yolo"
    )
