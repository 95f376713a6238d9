"""Stage one's settings (ExtractConfig) from the project's params.yaml: for the stage, the app, clip-har-predict, live.

    from pipeline.extract.project import project_extract_config
    cfg = project_extract_config()   # None without a params.yaml here; ConfigError naming each wrong key
    cfg.limits(), cfg.pool()         # the decode limits and workers stage one uses
    pool_cfg, limits = project_decoding(workers=1)   # a tool that decodes (clip-har-predict, live): the same limits
"""
from __future__ import annotations

from pathlib import Path

from pipeline.decode.video import DecodeLimits
from pipeline.decode.workers import DecodePool, PoolConfig  # DecodePool: the pool that project_decoding configures
from pipeline.extract.runner import ExtractConfig
from pipeline.paths import PARAMS
from pipeline.settings import Params, load_params

__all__ = ["DecodePool", "extract_config", "project_decoding", "project_extract_config", "settings_extract_config"]


def extract_config(extract: dict, root: str, annotations: str, classes: str, follow_links: str, model: str
                   ) -> ExtractConfig:
    """ExtractConfig from validated settings: the extract section, data.root, data.annotations, data.classes,
    data.follow_links and encoder.model (each named by its caller, so that the keys a stage reads stay in it)."""
    return ExtractConfig(**extract, root=root, annotations=annotations,
                         classes=classes, follow_links=follow_links, model=model)


def settings_extract_config(params: Params) -> ExtractConfig:
    """ExtractConfig from validated params (sections data, encoder, extract)."""
    data = params["data"]
    return extract_config(params["extract"], data["root"], data["annotations"], data["classes"],
                          data["follow_links"], params["encoder"]["model"])


def project_extract_config(file: str = PARAMS) -> ExtractConfig | None:
    """Stage one's settings from `file` (the current folder's params.yaml), or None where there is none (a folder
    that is not a project: the library's defaults apply). ConfigError when it is there and wrong."""
    if not Path(file).is_file():
        return None
    return settings_extract_config(load_params(file))


def project_decoding(workers: int = 1, file: str = PARAMS) -> tuple[PoolConfig, DecodeLimits]:
    """How a tool that decodes uploads or paths (clip-har-predict, live) runs its `workers` decode workers, and
    what one video may cost: params.yaml's extract.video_timeout_s, worker_memory_mb and max_* where `file` is
    there (stage one's), else the library's defaults (and the skip reasons name no setting). ConfigError naming each
    wrong key."""
    settings = project_extract_config(file)
    if settings is None:
        return PoolConfig(workers, named=False), DecodeLimits()
    pool = settings.pool()
    return PoolConfig(workers, pool.timeout_s, pool.memory_mb), settings.limits()
