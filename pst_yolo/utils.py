"""Small helpers shared across pst_yolo."""

from __future__ import annotations

from pathlib import Path

__all__ = ["parse_key_values", "resource_path"]

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


def parse_key_values(parser, items: list[str], what: str = "extra training arguments") -> dict:
    """Parse the ``key=value`` words an argparse parser left over (values read as YAML, as on the ``yolo`` CLI).

    Args:
        parser (argparse.ArgumentParser): Reports a malformed word through ``parser.error`` (exit 2).
        items (list[str]): The leftover words (``parse_known_args()[1]``).
        what (str): What the pairs are, for the error message.

    Examples:
        >>> import argparse
        >>> parse_key_values(argparse.ArgumentParser(), ["close_mosaic=5", "cache=ram"])
        {'close_mosaic': 5, 'cache': 'ram'}
    """
    import yaml

    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or key.startswith("-"):
            parser.error(f"unrecognized argument {item!r}: {what} are written key=value")
        extra[key] = yaml.safe_load(value)
    return extra
