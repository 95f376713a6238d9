"""Zero-shot heads: prompts, the text towers of the tiny CLIP and SigLIP with each family's scoring, a task whose
answer is known by construction, and calibration making a random encoder's answers "not sure"."""
import numpy as np
import pytest
import torch
import yaml

from pipeline.errors import ConfigError, HeadError
from pipeline.heads.estimators import ZeroShotHead
from pipeline.heads.kinds import load_head
from pipeline.embed.tiny_clip import build_tiny_clip
from pipeline.heads.zeroshot import (KINETICS, PRESETS, TEMPLATES, UCF101, ClassText, check_templates, class_prompts,
                                     preset_templates, project_templates, query_embedding, readable_name,
                                     text_embeddings, text_tower, zeroshot_head)
from pipeline.settings import TEMPLATE_PRESETS, load_params, template_problem
from tests.conftest import committed_params

NAMES = ["clapping", "walking_while_reading_book", "sitting"]


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory) -> str:
    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny-siglip"), family="siglip2"))


def attrs(dim):
    return {"encoder_model": "tiny", "encoder_fingerprint": "f", "embedding_dim": dim, "num_frames": 4,
            "sampling": "uniform-centers", "preprocess": "fast", "preprocess_config": "{}",
            "backend": "torch", "quantize": "none",
            "decoder": "pyav-test"}


# Dataset class names (UCF101's folders, HMDB51's, Kinetics' labels and folders) and what the prompts say
READABLE = {"ApplyEyeMakeup": "apply eye makeup", "YoYo": "yo yo", "PlayingDaf": "playing daf", "Skijet": "skijet",
            "HandstandPushups": "handstand pushups", "TaiChi": "tai chi", "brush_hair": "brush hair",
            "walking_while_reading_book": "walking while reading book", "BRUSH_HAIR": "brush hair",
            "brush-hair": "brush hair", "folding_t-shirt": "folding t-shirt", "backflip_(human)": "backflip (human)",
            "TVShow": "TV show", "3DPrinting": "3D printing", "Jump2Rope": "jump 2 rope", "Archery": "archery",
            "walking": "walking", "playing guitar": "playing guitar", "Playing Guitar": "Playing Guitar",
            "passing American football (in game)": "passing American football (in game)", "___": "___"}


def test_class_names_become_readable_and_readable_names_stay_as_they_are():
    assert {name: readable_name(name) for name in READABLE} == READABLE
    assert class_prompts("ApplyEyeMakeup", ("a video of a person {}.",)) == ["a video of a person apply eye makeup."]
    assert class_prompts("sitting") == [t.format("sitting") for t in TEMPLATES]


def test_the_presets_are_clips_own_lists_and_each_template_is_checked():
    assert TEMPLATES == PRESETS["kinetics"] and set(PRESETS) == set(TEMPLATE_PRESETS)
    # CLIP's Kinetics-700 and UCF101 lists (openai/CLIP data/prompts.md): 28 and 48 templates, in its order
    assert len(KINETICS) == len(set(KINETICS)) == 28 and len(UCF101) == len(set(UCF101)) == 48
    assert KINETICS[:3] == ("a photo of {}.", "a photo of a person {}.", "a photo of a person using {}.")
    assert KINETICS[-1] == "a demonstration of a person practicing {}." and "a example of {}." in KINETICS
    assert UCF101[:5] == ("a photo of a person {}.", "a video of a person {}.", "a example of a person {}.",
                          "a demonstration of a person {}.", "a photo of the person {}.")
    assert UCF101[-1] == "a demonstration of the person practicing {}."
    assert all(template_problem(t) is None for preset in PRESETS.values() for t in preset)
    assert preset_templates(committed_params()["zeroshot"]["templates"]) == TEMPLATES  # params.yaml's default
    for bad, why in ((["a video of"], "exactly once"), (["{} and {}"], "exactly once"), (["a {x} {}"], "no brace"),
                     ([], "non-empty"), ("a {}", "non-empty"), ([3], "is not text")):
        with pytest.raises(ConfigError, match=why) as e:
            check_templates(bad)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("templates, problem", [
    ([], "zeroshot.templates: [] needs at least 1 item"),
    (["a video of {}.", "a video of"], "zeroshot.templates[1]: 'a video of' must hold {} exactly once"),
    ("imagenet", "zeroshot.templates: 'imagenet' is not allowed (allowed: kinetics, ucf101, simple, or a list"),
    (["{0} {}"], "zeroshot.templates[0]: '{0} {}' must hold no brace other than its one {}")])
def test_a_wrong_templates_setting_is_one_line(tmp_path, templates, problem):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params(zeroshot={"templates": templates})))
    with pytest.raises(ConfigError) as e:
        load_params(tmp_path / "params.yaml")["zeroshot"]
    assert problem in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_text_tower_is_loaded_once_per_process_and_again_when_its_folder_changes(tiny_clip, tmp_path):
    import os
    import shutil

    model = shutil.copytree(tiny_clip, tmp_path / "clip")
    tower = text_tower(str(model))
    assert text_tower(str(model)) is tower
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert text_tower(str(model)) is not tower


def test_templates_are_recorded_in_the_head_and_used_again_by_the_app(tiny_clip, tmp_path, monkeypatch):
    """The zero-shot head records its templates; the app's zero-shot over typed actions and project_templates (the
    search's) use the saved head's, else params.yaml's, else the default."""
    from app.common import cached_text_embeddings
    from pipeline.paths import HEAD_FILES

    mine = ("a clip of somebody {}.", "{}")
    text = text_embeddings(tiny_clip, NAMES, mine)
    assert text.templates == mine
    head = zeroshot_head(text, NAMES, attrs(32))
    monkeypatch.chdir(tmp_path)
    assert project_templates() == TEMPLATES  # no head, no params.yaml
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params(zeroshot={"templates": "ucf101"})))
    assert project_templates() == UCF101
    head.save(tmp_path / HEAD_FILES["zeroshot"])
    back = load_head(HEAD_FILES["zeroshot"])
    assert back.templates == mine and back.meta_.templates == list(mine)
    assert project_templates() == mine == project_templates(back)
    typed = cached_text_embeddings(tiny_clip, ("walking", "sitting"))  # the app: the saved head's templates
    assert typed.templates == mine
    np.testing.assert_allclose(typed.embeddings, text_embeddings(tiny_clip, ["walking", "sitting"], mine).embeddings,
                               atol=1e-6)
    np.testing.assert_allclose(typed.embeddings[1], text.embeddings[2], atol=1e-6)  # "sitting", as in the head
    assert zeroshot_head(typed, ["walking", "sitting"], attrs(32)).templates == mine  # recorded again


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_a_query_embedding_is_the_mean_of_its_unit_prompt_embeddings(tiny_clip, tiny_siglip, family):
    """open_clip's ensemble, by hand: each prompt through the model alone, made unit length, averaged, unit again."""
    from transformers import AutoModel, AutoTokenizer

    model_id = tiny_clip if family == "clip" else tiny_siglip
    templates = PRESETS["simple"]
    query = query_embedding(model_id, "someone falls", templates)
    assert query.prompts == [t.format("someone falls") for t in templates]
    tokenizer, model = AutoTokenizer.from_pretrained(model_id), AutoModel.from_pretrained(model_id).eval()
    padding = {} if family == "clip" else {"padding": "max_length", "max_length": 64}
    with torch.no_grad():
        each = [model.get_text_features(**tokenizer([p], return_tensors="pt", **padding)) for p in query.prompts]
    each = [getattr(e, "pooler_output", e)[0].numpy() for e in each]
    mean = np.mean([e / np.linalg.norm(e) for e in each], axis=0)
    assert query.embedding.shape == (32,) and query.embedding.dtype == np.float32
    np.testing.assert_allclose(query.embedding, mean / np.linalg.norm(mean), atol=1e-5)
    text = text_embeddings(model_id, ["sitting", "someone falls"], templates)
    np.testing.assert_allclose(text.embeddings[1], query.embedding, atol=1e-5)  # a query scores as a class would
    assert (query.scale, query.bias, query.sigmoid) == (text.scale, text.bias, text.sigmoid)
    with pytest.raises(ConfigError, match="empty"):
        query_embedding(model_id, "  ", templates)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_text_embeddings_are_unit_length_and_differ_per_class(tiny_clip, tiny_siglip, family):
    text = text_embeddings(tiny_clip if family == "clip" else tiny_siglip, NAMES)
    emb = text.embeddings
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.abs(emb @ emb.T - np.eye(3)).max() > 1e-3  # not all the same vector
    np.testing.assert_allclose(text_embeddings(tiny_clip if family == "clip" else tiny_siglip, NAMES).embeddings,
                               emb)  # deterministic
    # the checkpoint's own learned scoring: CLIP's exp(logit_scale) at its initial 1/0.07 (100 once trained, as
    # published), not a fixed 100; SigLIP's sigmoid with its scale and bias (initialised to 1 and 0)
    if family == "clip":
        assert (text.sigmoid, text.bias) == (False, 0.0) and text.scale == pytest.approx(1 / 0.07, rel=1e-3)
    else:
        assert (text.sigmoid, text.scale, text.bias) == (True, 1.0, 0.0)


def test_siglip_scores_each_class_by_its_sigmoid_and_its_tokenizer_pads_to_the_full_length(tiny_siglip, tmp_path,
                                                                                             monkeypatch):
    from transformers import PreTrainedTokenizerBase
    lengths = []
    call = PreTrainedTokenizerBase.__call__

    def recording(self, *a, **kw):
        out = call(self, *a, **kw)
        lengths.append(out["input_ids"].shape[1])
        return out

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", recording)
    text = text_embeddings(tiny_siglip, NAMES)
    assert set(lengths) == {64}  # padding="max_length", as SigLIP was trained
    text = ClassText(text.embeddings, scale=3.0, bias=-1.5, sigmoid=True)
    head = zeroshot_head(text, NAMES, attrs(32))
    x = np.random.default_rng(2).normal(size=(6, 4, 32)).astype(np.float32)
    pooled = x.mean(1)
    cos = pooled / np.linalg.norm(pooled, axis=1, keepdims=True) @ text.embeddings.T
    sig = 1 / (1 + np.exp(-(3.0 * cos - 1.5)))  # each class's own probability
    np.testing.assert_allclose(np.exp(head.logits(x)), sig, rtol=1e-5)
    np.testing.assert_allclose(head.predict_proba(x, calibrated=False), sig / sig.sum(1, keepdims=True), rtol=1e-5)
    head.save(tmp_path / "z.pt")
    np.testing.assert_allclose(load_head(tmp_path / "z.pt").logits(x), head.logits(x), rtol=1e-6)  # kept with it


def test_a_random_encoders_zero_shot_answers_are_not_sure_once_calibrated(tiny_clip):
    """Issue 25.4: random features scored against random text gave "sitting 63.2%" at CLIP's fixed scale 100; with
    the checkpoint's own scale, and a temperature fitted on held-out videos, the answers fall under "not sure"."""
    text = text_embeddings(tiny_clip, NAMES)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 4, 32)).astype(np.float32), rng.integers(0, 3, 60)
    head = zeroshot_head(text, NAMES, attrs(32)).calibrate(x, y, 0.3)
    assert head.calibration_.temperature_note == "" and head.calibration_.train_videos == 0
    top = head.predict_proba(x).max(1)
    assert np.mean(top < head.not_sure_below_) > 0.9, top


def test_zero_shot_finds_the_class_whose_text_the_video_looks_like(tiny_clip):
    # by construction: each video's frames are its class's text embedding (scaled) plus noise
    emb = text_embeddings(tiny_clip, NAMES).embeddings
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    videos = 7.0 * emb[labels][:, None, :] + rng.normal(0, 0.05, (30, 4, 32))
    head = zeroshot_head(emb, NAMES, attrs(32))
    proba = head.predict_proba(videos.astype(np.float32))
    assert proba.shape == (30, 3) and np.all(proba.argmax(1) == labels)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)


def test_zero_shot_head_round_trip_with_weights_only(tiny_clip, tmp_path):
    emb = text_embeddings(tiny_clip, NAMES)
    head = zeroshot_head(emb, NAMES, attrs(32))
    head.save(tmp_path / "z.pt")
    raw = torch.load(tmp_path / "z.pt", weights_only=True)
    assert raw["meta"]["kind"] == "zeroshot" and raw["meta"]["templates"] == list(TEMPLATES)
    back = load_head(tmp_path / "z.pt")
    x = np.random.default_rng(1).normal(size=(5, 4, 32)).astype(np.float32)
    assert isinstance(back, ZeroShotHead) and back.classes_ == NAMES and back.templates == TEMPLATES
    np.testing.assert_allclose(back.predict_proba(x), head.predict_proba(x), atol=1e-6)


def test_a_checkpoint_without_a_tokenizer_is_a_clear_error(tiny_clip, tmp_path):
    import shutil
    shutil.copytree(tiny_clip, tmp_path / "clip")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (tmp_path / "clip" / name).unlink(missing_ok=True)
    with pytest.raises(HeadError, match="has no tokenizer"):
        text_embeddings(str(tmp_path / "clip"), NAMES)
    with pytest.raises(ConfigError, match="cannot read the encoder config"):  # no config.json at all
        text_embeddings(str(tmp_path), NAMES)
    with pytest.raises(ConfigError, match="at least one class"):
        text_embeddings(str(tmp_path), [])


def test_a_zero_shot_initialised_linear_head_starts_from_the_zero_shot_answer(tiny_clip):
    from pipeline.heads.estimators import LinearHead
    from pipeline.heads.training import LinearConfig
    emb = text_embeddings(tiny_clip, NAMES).embeddings
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    videos = (7.0 * emb[labels][:, None, :] + rng.normal(0, 0.05, (30, 4, 32))).astype(np.float32)
    pooled = videos.mean(axis=1)
    for text_init, expect_right in ((emb, True), (None, False)):
        start = LinearHead(LinearConfig(epochs=0), text_init).fit(pooled, labels, NAMES, attrs(32))
        right = np.mean(start.predict(pooled) == labels)
        assert (right == 1.0) == expect_right  # before any training step: the zero-shot answer, or a random one
    with pytest.raises(ConfigError, match="mean pooling"):
        LinearHead(LinearConfig(epochs=0, head="conv"), emb).fit(videos, labels, NAMES, attrs(32))


def test_a_siglip_goes_through_stage_one_every_head_zero_shot_and_predict(tiny_siglip, dataset, tmp_path):
    """Issue 27: nothing downstream names a family. Stage one on the tiny SigLIP 2 (96x96 frames), the three heads
    from its cache, and pipeline.tools.predict rebuilding the encoder from a head's metadata: the cache's rows again."""
    from pipeline.extract.cache import read_cache
    from pipeline.extract.runner import ExtractConfig, extract_features
    from pipeline.heads.estimators import LinearHead
    from pipeline.heads.logreg import LogRegHead
    from pipeline.tools.predict import load_predictor, predict_video
    from pipeline.heads.training import LinearConfig, mean_pool
    from pipeline.decode.workers import DecodePool, PoolConfig

    cache_file = tmp_path / "f.h5"
    extract_features(ExtractConfig(root=str(dataset), cache_path=str(cache_file), model=tiny_siglip, num_frames=4,
                                   batch_size=8, device="cpu", workers=0), progress=False)
    cache = read_cache(cache_file)
    assert cache.embeddings.shape == (7, 4, 32) and cache.attrs["encoder_family"] == "siglip"
    x, y = mean_pool(cache.embeddings), cache.labels
    heads = {"linear": LinearHead(LinearConfig(epochs=3)).fit(x, y, cache.class_names, cache.attrs),
             "logreg": LogRegHead().fit(x, y, cache.class_names, cache.attrs),
             "zeroshot": zeroshot_head(text_embeddings(cache.attrs["encoder_model"], cache.class_names),
                                       cache.class_names, cache.attrs).calibrate(x, y, 0.3)}
    with DecodePool(PoolConfig(workers=1)) as pool:
        for kind, head in heads.items():
            head.save(tmp_path / f"{kind}.pt")
            predictor = load_predictor(tmp_path / f"{kind}.pt", pool, "cpu")
            assert predictor.encoder.family == "siglip" and predictor.encoder.frame_spec().crop_h == 96
            pred = predict_video(dataset / cache.paths[0], predictor)
            np.testing.assert_allclose(pred.embeddings, cache.embeddings[0], atol=1e-6)
            np.testing.assert_allclose(pred.probabilities, head.predict_proba(cache.embeddings[:1])[0], atol=1e-6)
