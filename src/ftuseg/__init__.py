"""ftuseg: a reproducible DVC pipeline for functional tissue unit segmentation (HuBMAP + HPA)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ftuseg")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
