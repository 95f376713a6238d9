"""params.yaml checked at the door: each key's type, range, finiteness and cost bound, one line per mistake.

How to load the settings (the stages, the app, clip-har-predict, live):

    from pipeline.settings import load_params
    params = load_params()          # params.yaml of the current folder (ConfigError: missing, not YAML, not sections)
    train = params["train"]         # one section, validated on first use: a dict of plain values (int, float, str,
                                    # bool, list), ConfigError naming each wrong key, its value and what is allowed
    params.check()                  # every section at once

Stage one's typed config (ExtractConfig: decode limits, workers, encoder) is built from these by
pipeline.extract.project. A section is validated when it is used, so a stage stops only on the keys it reads (the
keys dvc.yaml lists for it); params.check() validates them all. params.yaml is the one copy of the settings' values:
every key must be there (a missing key is named), and nothing in the code repeats them (docs/parameters.md).
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Literal, Union

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from pipeline.data.discover import FOLLOW_LINKS
from pipeline.embed.choices import BACKEND_CHOICES, DEVICES, PRECISIONS, PREPROCESS_BACKENDS, QUANTIZE
from pipeline.errors import ConfigError, printable
from pipeline.extract.choices import STORAGE_DTYPES
from pipeline.paths import PARAMS

# Upper bounds of the settings that cost memory, processes or time (issue 34: 100,000 frames took 690 MB a worker;
# a billion workers forked to the machine's limits). Generous for real use, far below what breaks a machine.
MAX_FRAMES = 512  # extract.num_frames, extract.max_frames: frames sampled per video (CLIP papers use 8-64)
MAX_FPS = 60.0  # extract.fps: frames sampled per second of video (a video's own rate is rarely above 60)
MAX_BATCH = 4096  # extract.batch_size, train.batch_size: items per forward pass
MAX_WORKERS = 256  # extract.workers: decode processes, each with its own decoder and memory limit
MAX_SHARD = 100_000  # extract.shard_size: videos per part file
MAX_WORKER_MB = 1 << 20  # extract.worker_memory_mb: 1 TiB
MAX_PIXELS = 4 * 7680 * 4320  # extract.max_pixels: 16K (a frame of 33 MP is 100 MB as RGB)
MAX_ASPECT = 100  # extract.max_aspect: a thin frame resized to the encoder's short side grows by this factor
DAY_S = 86_400.0  # the longest timeout accepted (extract.video_timeout_s, hash_timeout_s)
MAX_EPOCHS = 100_000  # train.epochs
MAX_LR = 10.0  # train.lr: Adam moves a weight by about lr a step; beyond, nothing trains (torch overflows at 3.4e37)
MAX_ITER = 1_000_000  # baseline.max_iter
MAX_CLIPS = 10_000  # demo.clips_per_class
MAX_FOLDS = 100  # evaluate.folds
MAX_SHOTS = 100_000  # evaluate.shots: training videos per class
MAX_SEED = 2**32 - 1  # numpy's seeds
MAX_VIDEOS = 10**9  # search.exact_up_to: clips
MAX_LISTS = 1 << 20  # search.lists, search.nprobe: IVF lists (k-means centroids of D floats each)
MAX_TEXT = 4096  # characters of a path, a model id or a pattern
MAX_TEMPLATES = 1_000  # zeroshot.templates: prompts per class (CLIP's largest list, ImageNet's, has 80)
# Choices whose code imports torch or scipy have their one home here, where a check needs neither (the code reads
# them from here); the others are read from their torch-free homes above (discover, embed.choices, cache).
# zeroshot.templates by name; pipeline.heads.zeroshot.PRESETS holds each one's templates (docs/heads.md)
TEMPLATE_PRESETS = ("kinetics", "ucf101", "simple")
ENGINES = ("local", "ray")  # extract.engine: pipeline.extract.engines (local), pipeline.extract.ray_engine (ray)
SPLIT_METHODS = ("random", "group", "lists")  # split.method (pipeline.heads.split)
GROUP_BY = ("auto", "stem", "folder", "file")  # split.group_by (pipeline.heads.split)
TEMPORAL_POOLINGS = ("mean", "attention", "conv")  # train.head: the linear head's pooling (pipeline.heads.training)
NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")  # a float as text (1e-4: YAML 1.1 reads a string)


def _spelled(value: object) -> object:
    """A number written as text that YAML 1.1 leaves a string (`1e-4`) as that float; anything else unchanged, to
    be refused by the type check ("1_0", "nan" and "inf" as text are not numbers here)."""
    return float(value) if isinstance(value, str) and NUMBER.fullmatch(value.strip()) else value


def whole(low: int, high: int) -> type:
    """A whole number from low to high (a bool, 2.5 or "16" is refused)."""
    return Annotated[int, Field(ge=low, le=high)]


def real(ge: float | None = None, le: float | None = None, gt: float | None = None, lt: float | None = None
         ) -> type:
    """A finite number within the bounds given (an int is taken as its float; NaN, inf and a bool are refused)."""
    return Annotated[float, BeforeValidator(_spelled), Field(ge=ge, le=le, gt=gt, lt=lt, allow_inf_nan=False)]


NO_NUL = r"^[^\x00]*$"  # a NUL byte ends a path early for the OS, and cannot be stored in the cache
Text = Annotated[str, Field(max_length=MAX_TEXT, pattern=NO_NUL)]
Named = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=NO_NUL)]  # a path or id that must be given
Seed = whole(0, MAX_SEED)


class Section(BaseModel):
    """One section of params.yaml: every key required, no other key, strict types (`"false"` is not a bool)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Data(Section):
    root: Named
    annotations: Text
    classes: Text
    follow_links: Literal[FOLLOW_LINKS]


class Demo(Section):
    clips_per_class: whole(1, MAX_CLIPS)
    seed: Seed


class Encoder(Section):
    model: Named


class Extract(Section):
    num_frames: whole(1, MAX_FRAMES)
    batch_size: Union[Literal["auto"], whole(1, MAX_BATCH)] = Field(
        description=f"auto, or a whole number from 1 to {MAX_BATCH}")
    device: Literal[DEVICES]
    precision: Literal[("auto", *PRECISIONS)]
    preprocess: Literal[PREPROCESS_BACKENDS]
    backend: Literal[BACKEND_CHOICES]
    quantize: Literal[QUANTIZE]
    shard_size: whole(1, MAX_SHARD)
    workers: Union[Literal["auto"], whole(0, MAX_WORKERS)] = Field(
        description=f"auto, or a whole number from 0 (decode in the stage's process) to {MAX_WORKERS}")
    video_timeout_s: real(gt=0, le=DAY_S)
    hash_timeout_s: real(gt=0, le=DAY_S)
    worker_memory_mb: whole(64, MAX_WORKER_MB)
    max_pixels: whole(1, MAX_PIXELS)
    max_aspect: real(ge=1, le=MAX_ASPECT)
    max_damaged: real(ge=0, le=1)
    engine: Literal[ENGINES]
    ray_address: Text
    rehash: bool
    dtype: Literal[STORAGE_DTYPES]
    fps: real(ge=0, le=MAX_FPS)  # sampling by frame rate (0: off, num_frames per video)
    max_frames: whole(1, MAX_FRAMES)


class Split(Section):
    val: real(ge=0, lt=1)
    test: real(ge=0, lt=1)
    seed: Seed
    method: Literal[SPLIT_METHODS]
    group_pattern: Text
    group_by: Literal[GROUP_BY]
    train_list: Text
    test_list: Text

    @field_validator("group_pattern")
    @classmethod
    def _a_regex(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as e:  # compiling the user's pattern: its one failure
            raise ValueError(f"is not a regular expression ({e})") from None
        return pattern


class Train(Section):
    head: Literal[TEMPORAL_POOLINGS]
    lr: real(gt=0, le=MAX_LR)
    epochs: whole(1, MAX_EPOCHS)
    batch_size: whole(1, MAX_BATCH)
    weight_decay: real(ge=0, le=10)
    seed: Seed


class Baseline(Section):
    C: real(gt=0, le=1e12)
    max_iter: whole(1, MAX_ITER)


class Calibration(Section):
    not_sure_below_chance_to_certain: real(ge=0, lt=1)


def template_problem(template: str) -> str | None:
    """What is wrong with a prompt template, or None: it must hold `{}` exactly once (where the class name or query
    goes) and no other brace, as str.format fills it."""
    if template.count("{}") != 1:
        return "must hold {} exactly once, where the class name goes"
    if "{" in template.replace("{}", "") or "}" in template.replace("{}", ""):
        return "must hold no brace other than its one {}"
    return None


def _a_template(template: str) -> str:
    problem = template_problem(template)
    if problem:
        raise ValueError(problem)
    return template


Template = Annotated[str, Field(max_length=MAX_TEXT, pattern=NO_NUL), AfterValidator(_a_template)]


class Zeroshot(Section):
    templates: Union[Literal[TEMPLATE_PRESETS], Annotated[list[Template], Field(min_length=1, max_length=MAX_TEMPLATES)]
                     ] = Field(description=f"{', '.join(TEMPLATE_PRESETS)}, or a list of templates each holding {{}} "
                                           "once")


class Evaluate(Section):
    folds: Union[Literal[0], whole(2, MAX_FOLDS)] = Field(description=f"0 (off), or from 2 to {MAX_FOLDS}")
    shots: Annotated[list[whole(1, MAX_SHOTS)], Field(max_length=32)] = Field(
        description=f"a list of whole numbers from 1 to {MAX_SHOTS} ([] = off)")


class Search(Section):
    exact_up_to: whole(1, MAX_VIDEOS)
    lists: whole(0, MAX_LISTS)
    nprobe: whole(1, MAX_LISTS)
    seed: Seed


SECTIONS: dict[str, type[Section]] = {"data": Data, "demo": Demo, "encoder": Encoder, "extract": Extract,
                                      "split": Split, "train": Train, "baseline": Baseline,
                                      "calibration": Calibration, "zeroshot": Zeroshot,
                                      "evaluate": Evaluate, "search": Search}
ALLOWED = {"less_than_equal": "is above the limit {le}", "less_than": "must be below {lt}",
           "greater_than_equal": "is below the minimum {ge}", "greater_than": "must be above {gt}",
           "finite_number": "is not a finite number", "int_type": "must be a whole number",
           "int_from_float": "must be a whole number", "float_type": "must be a number",
           "bool_type": "must be true or false (unquoted)", "string_type": "must be text",
           "literal_error": "must be one of {expected}", "list_type": "must be a list",
           "string_too_short": "must not be empty", "string_too_long": "is longer than {max_length} characters",
           "too_long": "has more than {max_length} items",
           "too_short": "needs at least {min_length} item(s)", "string_pattern_mismatch": "must not hold a NUL byte",
           "value_error": "{error}"}


class Params(Mapping):
    """params.yaml as read (load_params): params[section] is that section validated, as a dict of plain values."""

    def __init__(self, raw: dict, file: str = PARAMS):
        self.raw, self.file, self._checked = raw, file, {}

    def __getitem__(self, section: str) -> dict:
        if section not in self._checked:
            self._checked[section] = validate(self.raw, section, self.file)
        return self._checked[section]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def check(self) -> Params:
        """Every section validated (ConfigError listing every mistake, one line each); self."""
        lines = []
        for section in SECTIONS:
            try:
                self[section]
            except ConfigError as e:
                lines += str(e).split("\n  ")
        if lines:
            raise ConfigError("\n  ".join(lines))
        return self


def load_params(file: str | os.PathLike = PARAMS) -> Params:
    """params.yaml (default: the current folder's, where dvc runs the stages) as Params. ConfigError when it cannot
    be read, is not YAML, or is not a mapping of the known sections. Its sections are validated when used."""
    file = os.fspath(file)
    try:
        with open(file, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError:
        raise ConfigError(f"cannot read {printable(file)}: run the stages from the project folder (dvc repro does)"
                          ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{printable(file)} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise ConfigError(f"{printable(file)} is not valid YAML{at}: {printable(getattr(e, 'problem', '') or e)}"
                          ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{printable(file)}: {_shown(raw)} is not a mapping of sections ({', '.join(SECTIONS)}): "
                          "restore it with `git checkout params.yaml`")
    unknown = sorted(str(k) for k in raw if k not in SECTIONS)
    if unknown:
        raise ConfigError(f"{printable(file)}: unknown section {printable(unknown[0])!r} "
                          f"(known: {', '.join(SECTIONS)})")
    return Params(raw, file)


def validate(raw: dict, section: str, file: str = PARAMS) -> dict:
    """raw[section] checked against SECTIONS[section], as a dict of plain values; ConfigError, one line per wrong
    key: `params.yaml: extract.num_frames: 100000 is above the limit 512`."""
    if section not in raw:
        raise ConfigError(f"{printable(file)}: the section {section} is missing (restore it from the committed file: "
                          "`git show HEAD:params.yaml`)")
    values = raw[section]
    if not isinstance(values, dict):
        raise ConfigError(f"{printable(file)}: {section}: {_shown(values)} is not a section (a mapping of keys: "
                          f"{', '.join(SECTIONS[section].model_fields)})")
    try:
        return SECTIONS[section].model_validate(values).model_dump()
    except ValidationError as e:
        raise ConfigError("\n  ".join(_lines(e, SECTIONS[section], section, file))) from None


def _lines(error: ValidationError, model: type[Section], section: str, file: str) -> list[str]:
    """One line per wrong key: its name, its value (printable, shortened) and what is allowed."""
    by_key: dict[str, list[dict]] = {}
    for e in error.errors():
        by_key.setdefault(str(e["loc"][0]) if e["loc"] else "", []).append(e)
    lines = []
    for key, errors in by_key.items():
        name = f"{section}.{printable(key)}"
        if errors[0]["type"] == "extra_forbidden":
            lines.append(f"{printable(file)}: unknown key {name} (known: {', '.join(sorted(model.model_fields))})")
            continue
        if errors[0]["type"] == "missing":
            lines.append(f"{printable(file)}: {name} is missing (restore it from the committed file: "
                         "`git show HEAD:params.yaml`)")
            continue
        # a union (auto or a number): the member's bound when the value has the right type, else what is allowed
        bound = next((e for e in errors if e["type"] not in ("literal_error", "int_type", "list_type")), errors[0])
        problem = ALLOWED.get(bound["type"], printable(bound["msg"])).format(**_context(bound))
        if isinstance(bound["input"], float) and not math.isfinite(bound["input"]):
            problem = ALLOWED["finite_number"]
        elif bound is errors[0] and len(errors) > 1:  # of no member's type: what is allowed says it
            problem = "is not allowed"
        field = model.model_fields.get(key)
        allowed = f" (allowed: {field.description})" if field is not None and field.description else ""
        index = next((i for i in bound["loc"][1:] if isinstance(i, int)), None)  # a list's item (in a union too)
        where = "" if index is None else f"[{index}]"
        lines.append(f"{printable(file)}: {name}{where}: {_shown(bound['input'])} {problem}{allowed}")
    return lines


def _context(error: dict) -> dict:
    """The error's bounds as a person writes them (512, not 512.0)."""
    return {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in (error.get("ctx") or {}).items()}


def _shown(value: object, width: int = 60) -> str:
    """A value of params.yaml as YAML writes it (null, true, 'text'), printable and shortened."""
    text = ("null" if value is None else str(value).lower() if isinstance(value, bool) else
            "a list" if isinstance(value, list) and len(repr(value)) > width else repr(value))
    text = printable(text)
    return text if len(text) <= width else text[:width - 3] + "..."
