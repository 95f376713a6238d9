"""Load a model from a local directory or the Hugging Face hub, failing at once (no retries) when the hub is off;
which family (CLIP, SigLIP) a checkpoint is, from its config."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError

from pipeline.errors import ConfigError, printable
from pipeline.paths import PARAMS, TINY_CLIP

# The checkpoints' config model_type -> family (each family's vision tower, image processor and text side).
# SigLIP 2's fixed-resolution checkpoints (google/siglip2-base-patch16-224, ...) are model_type "siglip" with
# SigLIP 2's processor settings and tokenizer; its "siglip2" checkpoints are the NaFlex variants (below).
FAMILIES = {"clip": "clip", "clip_vision_model": "clip", "siglip": "siglip", "siglip_vision_model": "siglip"}
NAFLEX = ("siglip2", "siglip2_vision_model")  # sized per image by aspect ratio: refused (docs/encoders.md)
PROBE_TIMEOUT_S = 3.0  # one HEAD request to the hub's endpoint; huggingface_hub itself retries for ~25 s
OFFLINE_NEXT_STEP = (f"build a tiny random CLIP with `python -m pipeline.embed.encoder --tiny {TINY_CLIP}`, then run "
                     f"`dvc exp run -S encoder.model={TINY_CLIP}` (or set encoder.model in params.yaml to a local "
                     "directory holding a CLIP saved with save_pretrained)")


def is_local(model_id: str) -> bool:
    """True when model_id names a path (starts with . / ~ or exists), not a hub id."""
    return model_id.startswith((".", "/", "~")) or os.path.exists(model_id)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """False when HF_HUB_OFFLINE is set or one HEAD request to the hub's endpoint fails (no retries); honours the
    proxies huggingface_hub itself uses."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure to connect means: do not wait on the hub's retries
        return False
    return True


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' progress bars ("Loading weights", "Writing model shards") off, and the previous setting back
    after: on disk these take well under a second and the bars only fill stderr and dvc's output."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def may_download(model_id: str) -> bool:
    """Whether the hub may be asked for `model_id`: only when the user's own settings name it (params.yaml's
    encoder.model in this folder). A model id read from an artifact (a head's or a cache's encoder_model: a file
    someone else can hand over) is loaded from disk only, so a shared file never makes this machine open a URL."""
    from pipeline.errors import UserError
    from pipeline.settings import load_params

    try:
        return Path(PARAMS).is_file() and load_params()["encoder"]["model"] == model_id
    except (UserError, OSError):  # a params.yaml that cannot be read names nothing
        return False


class _DefaultConfigNoise(logging.Filter):
    """On transformers' config logger: holds back the messages it saw while capturing, and those same messages
    after (and nothing else)."""

    def __init__(self):
        super().__init__()
        self.capturing, self.messages = True, set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.capturing:
            self.messages.add(record.getMessage())
            return False
        return record.getMessage() not in self.messages


@cache
def quiet_default_text_configs() -> None:
    """Once per process: transformers' own SiglipTextConfig and Siglip2TextConfig defaults hold CLIP's special ids
    (bos 49406, eos 49407) with a 32,000-token vocabulary, and its check of token ids warns "bos_token_id must be
    `None` or an integer within the vocabulary" whenever such a default is built, which transformers does to print
    any SigLIP config: PretrainedConfig.from_dict runs `logger.info(f"Model config {config}")`, info shown or not,
    and the repr diffs each sub-config against a default one. Every SigLIP load (config, model, saving) so warned,
    whatever ids its own checkpoint holds; nothing reads those ids (SigLIP's text tower pools the last position).
    Here the defaults are built once, and exactly the warnings they make are held back from then on; any other
    warning of transformers (a checkpoint's own wrong ids included) is printed as before."""
    import transformers

    noise = _DefaultConfigNoise()
    logger = logging.getLogger("transformers.configuration_utils")
    logger.addFilter(noise)
    for name in ("SiglipTextConfig", "Siglip2TextConfig"):
        if hasattr(transformers, name):
            getattr(transformers, name)()
    noise.capturing = False


def load_pretrained(loaders: tuple, model_id: str, download: bool = True) -> list:
    """[loader.from_pretrained(model_id) for loader in loaders]: from the local directory or the local Hugging Face
    cache without touching the network (and without progress bars) when it can, else from the hub if it answers
    and `download` allows it (with the download's bars); ConfigError giving the next command when the model is not
    on disk and the hub is off, unreachable or not to be asked. Other load errors propagate for the caller to word."""
    quiet_default_text_configs()
    if is_local(model_id):
        if not Path(model_id).expanduser().is_dir():
            raise ConfigError(f"encoder model directory {model_id!r} does not exist: {OFFLINE_NEXT_STEP}")
        with no_progress_bars():
            return [loader.from_pretrained(model_id) for loader in loaders]
    try:  # already in the local Hugging Face cache: no network at all
        with no_progress_bars():
            return [loader.from_pretrained(model_id, local_files_only=True) for loader in loaders]
    except OSError:
        pass
    if not download:
        raise ConfigError(f"{printable(model_id)} is not in the local Hugging Face cache, and a model named by a "
                          "shared file is never downloaded: set encoder.model to it in params.yaml to fetch it")
    if not hub_reachable():
        raise ConfigError(f"cannot load {model_id!r}: it is not in the local Hugging Face cache and the hub "
                         f"cannot be reached (no network, or HF_HUB_OFFLINE is set): {OFFLINE_NEXT_STEP}")
    return [loader.from_pretrained(model_id) for loader in loaders]


# The largest values a CLIP or SigLIP vision config may hold (the biggest released: ViT-bigG/14, 48 layers of 1,664;
# SigLIP so400m at 512 px): generous, but a config with 100,000 layers is refused before it is built (seconds to
# minutes with no output), not after.
CONFIG_BOUNDS = {"num_hidden_layers": 256, "hidden_size": 16_384, "intermediate_size": 65_536,
                 "num_attention_heads": 256, "image_size": 2048, "patch_size": 2048, "projection_dim": 16_384}


def model_family(model_id: str, download: bool = True) -> str:
    """The family of a checkpoint ("clip" or "siglip", FAMILIES), read from its config's model_type, never from its
    name; ConfigError for another model type, a SigLIP 2 NaFlex checkpoint, or a config that cannot be loaded."""
    from transformers import AutoConfig

    try:
        (config,) = load_pretrained((AutoConfig,), model_id, download)
    except ConfigError:  # load_pretrained's own: not on disk and the hub off, with the next step
        raise
    except (OSError, ValueError) as e:  # AutoConfig's: no config.json, or no model_type it knows
        raise ConfigError(f"cannot read the encoder config of {model_id!r} [{str(e).splitlines()[0]}]: "
                         f"{OFFLINE_NEXT_STEP}") from None
    except StrictDataclassError as e:  # a field of the wrong type (transformers validates its configs)
        raise ConfigError(f"{printable(model_id)}: a field of its config.json has a value of the wrong type "
                          f"({type(e).__name__}): not a CLIP or SigLIP this code loads") from None
    kind = config.model_type
    vision = getattr(config, "vision_config", config)
    for key, most in CONFIG_BOUNDS.items():  # a model folder is untrusted: its config must not size the work
        value = getattr(vision, key, getattr(config, key, None))
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most):
            raise ConfigError(f"{printable(model_id)}: its vision config's {key} is {printable(repr(value))[:40]}, "
                              f"not a whole number from 1 to {most:,}: not a CLIP or SigLIP this code loads")
    if kind in NAFLEX:
        raise ConfigError(f"{model_id!r} is a SigLIP 2 NaFlex checkpoint (model_type {kind}), which sizes each image "
                          "by its aspect ratio; the cache holds frames of one fixed size: use a fixed-resolution "
                          "SigLIP 2 such as google/siglip2-base-patch16-224")
    if kind not in FAMILIES:
        raise ConfigError(f"{model_id!r} is a {kind!r} model; encoder.model takes a CLIP or SigLIP / SigLIP 2 "
                          f"checkpoint (model_type {', '.join(sorted(FAMILIES))})")
    return FAMILIES[kind]
