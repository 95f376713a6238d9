"""params.yaml at the door (pipeline.settings): every wrong setting is one line naming the key, the value and what
is allowed, before any work; the stages, clip-har-predict and the app's loader read through it."""
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.settings import SECTIONS, load_params
from tests.conftest import committed_params

ROOT = Path(__file__).resolve().parents[1]


def write_params(folder: Path, params) -> Path:
    file = folder / "params.yaml"
    file.write_text(params if isinstance(params, str) else yaml.safe_dump(params))
    return file


def refusal(tmp_path: Path, section: str, key: str | None, value) -> str:
    """The ConfigError's message for the committed params.yaml with section.key (or the whole section) = value."""
    params = committed_params()
    if key is None:
        params[section] = value
    else:
        params[section][key] = value
    loaded = load_params(write_params(tmp_path, params))
    with pytest.raises(ConfigError) as refused:
        loaded[section]
    return str(refused.value)


# issue 34, items 2, 4 and 5 (the settings' cases), and their neighbours: the one line each gives
REFUSED = [
    ("train", "lr", float("nan"), "train.lr: nan is not a finite number"),
    ("train", "lr", float("inf"), "train.lr: inf is not a finite number"),
    ("train", "weight_decay", float("nan"), "train.weight_decay: nan is not a finite number"),
    ("train", "lr", 0, "train.lr: 0 must be above 0"),
    ("train", "lr", "1_0", "train.lr: '1_0' must be a number"),
    ("train", "batch_size", 10**9, "train.batch_size: 1000000000 is above the limit 4096"),
    ("calibration", "not_sure_below_chance_to_certain", 5,
     "calibration.not_sure_below_chance_to_certain: 5 must be below 1"),
    ("calibration", "not_sure_below_chance_to_certain", float("nan"),
     "calibration.not_sure_below_chance_to_certain: nan is not a finite number"),
    ("calibration", "not_sure_below_chance_to_certain", -3,
     "calibration.not_sure_below_chance_to_certain: -3 is below the minimum 0"),
    ("extract", "video_timeout_s", -1, "extract.video_timeout_s: -1 must be above 0"),
    ("extract", "hash_timeout_s", float("nan"), "extract.hash_timeout_s: nan is not a finite number"),
    ("extract", "max_aspect", float("nan"), "extract.max_aspect: nan is not a finite number"),
    ("extract", "max_damaged", float("nan"), "extract.max_damaged: nan is not a finite number"),
    ("extract", "max_damaged", 2, "extract.max_damaged: 2 is above the limit 1"),
    ("extract", "workers", -1, "extract.workers: -1 is below the minimum 0 (allowed: auto, or a whole number from 0 "
                               "(decode in the stage's process) to 256)"),
    ("extract", "workers", 10**9, "extract.workers: 1000000000 is above the limit 256 (allowed: auto, "),
    ("extract", "workers", "many", "extract.workers: 'many' is not allowed (allowed: auto, "),
    ("extract", "rehash", "false", "extract.rehash: 'false' must be true or false (unquoted)"),
    ("extract", "rehash", 0, "extract.rehash: 0 must be true or false (unquoted)"),
    ("extract", "num_frames", 100000, "extract.num_frames: 100000 is above the limit 512"),
    ("extract", "num_frames", 0, "extract.num_frames: 0 is below the minimum 1"),
    ("extract", "max_frames", 100000, "extract.max_frames: 100000 is above the limit 512"),
    ("extract", "fps", -1, "extract.fps: -1 is below the minimum 0"),
    ("extract", "fps", 1000, "extract.fps: 1000 is above the limit 60"),
    ("extract", "batch_size", 10**9, "extract.batch_size: 1000000000 is above the limit 4096"),
    ("extract", "shard_size", 0, "extract.shard_size: 0 is below the minimum 1"),
    ("extract", "max_pixels", 10**11, "extract.max_pixels: 100000000000 is above the limit 132710400"),
    ("extract", "worker_memory_mb", 10**9, "extract.worker_memory_mb: 1000000000 is above the limit 1048576"),
    ("extract", "device", "gpu", "extract.device: 'gpu' must be one of 'auto', 'cpu' or 'cuda'"),
    ("data", "root", None, "data.root: null must be text"),
    ("data", "root", ["a", "b"], "data.root: ['a', 'b'] must be text"),
    ("data", "root", "", "data.root: '' must not be empty"),
    ("data", "root", "a\0b", "data.root: 'a\\x00b' must not hold a NUL byte"),
    ("data", "follow_links", "some", "data.follow_links: 'some' must be one of 'inside' or 'all'"),
    ("encoder", "model", None, "encoder.model: null must be text"),
    ("split", "seed", -1, "split.seed: -1 is below the minimum 0"),
    ("split", "seed", "abc", "split.seed: 'abc' must be a whole number"),
    ("split", "val", "abc", "split.val: 'abc' must be a number"),
    ("split", "test", 1, "split.test: 1 must be below 1"),
    ("split", "group_pattern", "(", "split.group_pattern: '(' is not a regular expression (missing ), unterminated"),
    ("evaluate", "folds", 2.5, "evaluate.folds: 2.5 is not allowed (allowed: 0 (off), or from 2 to 100)"),
    ("evaluate", "folds", "abc", "evaluate.folds: 'abc' is not allowed (allowed: 0 (off), or from 2 to 100)"),
    ("evaluate", "folds", 1, "evaluate.folds: 1 is below the minimum 2 (allowed: 0 (off), or from 2 to 100)"),
    ("evaluate", "shots", 1.5, "evaluate.shots: 1.5 must be a list (allowed: a list of whole numbers"),
    ("evaluate", "shots", "abc", "evaluate.shots: 'abc' must be a list"),
    ("evaluate", "shots", 4, "evaluate.shots: 4 must be a list"),
    ("evaluate", "shots", [1, 1.5], "evaluate.shots[1]: 1.5 must be a whole number"),
    ("baseline", "C", float("nan"), "baseline.C: nan is not a finite number"),
    ("baseline", "max_iter", 0, "baseline.max_iter: 0 is below the minimum 1"),
    ("demo", "clips_per_class", 10**7, "demo.clips_per_class: 10000000 is above the limit 10000"),
    ("train", "epoch", 10, "unknown key train.epoch (known: batch_size, epochs, head, lr, seed, weight_decay)"),
    ("calibration", None, "abc", "calibration: 'abc' is not a section (a mapping of keys: "
                                 "not_sure_below_chance_to_certain)"),
    ("extract", None, None, "extract: null is not a section (a mapping of keys: num_frames, batch_size, "),
    ("split", None, None, "split: null is not a section"),
]


@pytest.mark.parametrize("section, key, value, line", REFUSED, ids=[f"{s}.{k}={v!r}" for s, k, v, _ in REFUSED])
def test_a_wrong_setting_is_one_line_naming_key_value_and_what_is_allowed(tmp_path, section, key, value, line):
    message = refusal(tmp_path, section, key, value)
    assert message.startswith(f"{tmp_path / 'params.yaml'}: {line}"), message
    assert "\n" not in message


def test_every_mistake_of_a_section_is_listed_one_per_line(tmp_path):
    params = committed_params(train={"lr": float("nan"), "epochs": 0, "head": "max"})
    with pytest.raises(ConfigError) as refused:
        load_params(write_params(tmp_path, params))["train"]
    lines = str(refused.value).split("\n  ")
    assert [line.split(": ")[1] for line in lines] == ["train.head", "train.lr", "train.epochs"]


@pytest.mark.parametrize("text, line", [
    ("", "None is not a mapping of sections"),
    ("- a\n- b\n", "['a', 'b'] is not a mapping of sections"),
    ("data: [\n", "is not valid YAML (line 2, column 1)"),
    ("data: {}\nnoise: 1\n", "unknown section 'noise'"),
])
def test_a_params_file_that_is_not_sections_is_refused_on_load(tmp_path, text, line):
    with pytest.raises(ConfigError, match="^" + str(tmp_path / "params.yaml").replace("\\", "\\\\") + ".*") as e:
        load_params(write_params(tmp_path, text))
    assert line.replace("None", "null") in str(e.value) and "\n" not in str(e.value)


def test_a_missing_section_or_key_is_named(tmp_path):
    params = committed_params()
    del params["evaluate"], params["train"]["lr"]
    loaded = load_params(write_params(tmp_path, params))
    with pytest.raises(ConfigError, match=r"the section evaluate is missing"):
        loaded["evaluate"]
    with pytest.raises(ConfigError, match=r"train\.lr is missing"):
        loaded["train"]
    with pytest.raises(ConfigError) as both:
        loaded.check()
    assert "evaluate is missing" in str(both.value) and "train.lr is missing" in str(both.value)
    assert loaded["split"] == committed_params()["split"]  # a stage that reads neither still runs


def test_the_committed_settings_pass_with_their_types(tmp_path):
    loaded = load_params(write_params(tmp_path, committed_params())).check()
    committed = committed_params()
    for section in SECTIONS:
        assert loaded[section] == committed[section]
    assert type(loaded["train"]["lr"]) is float and type(loaded["extract"]["rehash"]) is bool


def test_numbers_yaml_leaves_as_text_are_read_but_quoted_booleans_are_not(tmp_path):
    text = yaml.safe_dump(committed_params()).replace("lr: 0.0001", "lr: 1e-4")
    assert "lr: 1e-4" in text
    assert load_params(write_params(tmp_path, text))["train"]["lr"] == 1e-4  # YAML 1.1 reads 1e-4 as text
    text = text.replace("rehash: false", "rehash: 'false'")
    with pytest.raises(ConfigError, match=r"extract\.rehash: 'false' must be true or false"):
        load_params(write_params(tmp_path, text))["extract"]


def test_the_schema_and_the_library_configs_name_the_same_keys():
    from pipeline.data.demo import DemoConfig
    from pipeline.extract.runner import ExtractConfig
    from pipeline.heads.calibration import CalibrationConfig
    from pipeline.heads.logreg import LogRegConfig
    from pipeline.heads.split import SplitConfig
    from pipeline.heads.training import LinearConfig

    def keys(cls, *besides):
        return {f.name for f in fields(cls)} - set(besides)

    assert keys(ExtractConfig, "root", "cache_path", "annotations", "classes", "follow_links", "model") == set(
        SECTIONS["extract"].model_fields)
    for cls, section in ((LinearConfig, "train"), (LogRegConfig, "baseline"), (SplitConfig, "split"),
                         (CalibrationConfig, "calibration")):
        assert keys(cls) == set(SECTIONS[section].model_fields), section
    assert keys(DemoConfig, "out_dir") == set(SECTIONS["demo"].model_fields)


def test_tools_that_decode_take_the_projects_limits(tmp_path, monkeypatch):
    from pipeline.decode.video import DecodeLimits
    from pipeline.extract.project import project_decoding

    monkeypatch.chdir(tmp_path)
    pool, limits = project_decoding()
    assert limits == DecodeLimits() and pool.workers == 1 and not pool.named  # no params.yaml: the defaults
    write_params(tmp_path, committed_params(extract={"max_pixels": 640 * 480, "max_aspect": 3, "max_damaged": 0.1,
                                                     "video_timeout_s": 7, "worker_memory_mb": 512}))
    pool, limits = project_decoding()
    assert limits == DecodeLimits(640 * 480, 3.0, max_damaged=0.1)
    assert (pool.workers, pool.timeout_s, pool.memory_mb, pool.named) == (1, 7.0, 512, True)


def test_clip_har_predict_stops_on_a_wrong_setting_in_one_line(tmp_path, monkeypatch, capsys):
    from pipeline.tools.cli import predict

    write_params(tmp_path, committed_params(extract={"max_aspect": float("nan")}))
    monkeypatch.chdir(tmp_path)
    assert predict(["clip.mp4"]) == 2
    assert capsys.readouterr().err == "error: params.yaml: extract.max_aspect: nan is not a finite number\n"


@pytest.mark.parametrize("stage, section, values, line", [
    ("extract", "extract", {"num_frames": 100000}, "params.yaml: extract.num_frames: 100000 is above the limit 512"),
    ("demo", "demo", {"seed": -1}, "params.yaml: demo.seed: -1 is below the minimum 0"),
])
def test_a_stage_stops_at_the_door_with_one_line(tmp_path, stage, section, values, line):
    write_params(tmp_path, committed_params(**{section: values}))
    run = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert (run.returncode, run.stderr) == (1, f"{stage}: error: {line}\n")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "data").exists()  # no work done
