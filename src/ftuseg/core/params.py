"""params.yaml is composed by Hydra from ``conf/``, exactly as ``dvc exp run -S`` composes it.

``conf/config.yaml`` holds the stage groups and a defaults list: one config group per
architecture (``conf/models/<name>/{sample,full}.yaml``), a ``profile`` group and a ``model`` group
(which architectures the pipeline trains). DVC's nested ``${a.${b}}`` interpolation does not
work, so selecting a model is a config-group choice rather than a lookup in dvc.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ftuseg.core.errors import DataError
from ftuseg.core.utils import atomic_path, read_yaml

CONF_DIR = Path("conf")
CONFIG_NAME = "config"
PROFILE_LINE = re.compile(r"^(\s*-\s*profile:\s*)([\w-]+)(.*)$", re.MULTILINE)


def options(group: str, conf_dir: str | Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))


# Comments only: the values below it are byte for byte what `dvc exp run` composes (it writes
# the same file without this header, which changes no parameter and no stage).
HEADER = """\
# Generated from conf/ by `ftuseg params` (Hydra, as `dvc exp run -S` composes it).
# Edit conf/ (docs/configuration.md), never this file: it is rewritten.
"""


def write_params(
    overrides: list[str] | None = None,
    conf_dir: str | Path = CONF_DIR,
    out: str | Path = "params.yaml",
) -> dict[str, Any]:
    """Compose ``conf/`` with Hydra ``overrides`` and write the result to ``out`` atomically,
    with DVC's own composer (so the values are byte-identical to what ``dvc exp run`` writes),
    under :data:`HEADER`."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    conf_dir = Path(conf_dir).resolve()
    if not (conf_dir / f"{CONFIG_NAME}.yaml").is_file():
        raise DataError(f"{conf_dir / (CONFIG_NAME + '.yaml')}: Hydra config not found")
    with atomic_path(out) as tmp:
        try:
            compose_and_dump(tmp, str(conf_dir), None, CONFIG_NAME, str(conf_dir), overrides or [])
        except (HydraException, OmegaConfBaseException) as exc:
            raise DataError(f"{conf_dir}: cannot compose params ({exc})") from None
        tmp.write_text(HEADER + tmp.read_text())
    return read_yaml(out)


def set_default_profile(name: str, conf_dir: str | Path = CONF_DIR) -> None:
    """Make ``name`` the profile of ``conf/config.yaml``'s defaults list, so later
    ``dvc exp run -S ...`` compositions keep it."""
    known = options("profile", conf_dir)
    if name not in known:
        raise DataError(
            f"{Path(conf_dir) / 'profile' / name}.yaml: no such profile "
            f"(available: {', '.join(known)})"
        )
    path = Path(conf_dir) / f"{CONFIG_NAME}.yaml"
    text = path.read_text()
    if not PROFILE_LINE.search(text):
        raise DataError(f"{path}: no `- profile: ...` entry in the defaults list")
    with atomic_path(path) as tmp:
        tmp.write_text(PROFILE_LINE.sub(lambda m: m.group(1) + name + m.group(3), text, count=1))
