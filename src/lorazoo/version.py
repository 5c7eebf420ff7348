"""The one version source: the installed package metadata (pyproject.toml's ``version``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lorazoo")
except PackageNotFoundError:  # a source tree on sys.path without `pip install -e .`
    __version__ = "0.0.0+unknown"
