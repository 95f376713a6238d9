"""Zero-shot heads and search queries from text: class names made readable and put into an ensemble of prompt
templates, encoded by the text tower of the same CLIP or SigLIP checkpoint, scored the family's way."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import ConfigError, HeadError, printable
from pipeline.heads.estimators import ZeroShotHead
from pipeline.heads.kinds import FROM_TEXT, HEADS, load_head
from pipeline.embed.hub import load_pretrained, model_family
from pipeline.heads.training import LOGIT_SCALE
from pipeline.paths import PARAMS
from pipeline.settings import TEMPLATE_PRESETS, load_params, template_problem

# The prompt templates of zeroshot.templates by name (settings.TEMPLATE_PRESETS). kinetics and ucf101: CLIP's own
# lists for Kinetics-700 and UCF101 (Radford et al. 2021; openai/CLIP, data/prompts.md), word for word ("a example"
# included: the paper's numbers were made with it). simple: five short ones, clip-har's first default.
KINETICS = tuple(f"a {kind} of {who}{verb}{{}}." for kind in ("photo", "video", "example", "demonstration")
                 for who, verbs in (("", ("",)), ("a person ", ("", "using ", "doing ", "during ", "performing ",
                                                                  "practicing ")))
                 for verb in verbs)
UCF101 = tuple(f"a {kind} of {person} {verb}{{}}." for verb in ("", "using ", "doing ", "during ", "performing ",
                                                                 "practicing ")
               for person in ("a person", "the person") for kind in ("photo", "video", "example", "demonstration"))
SIMPLE = ("a video of a person {}.", "a photo of a person {}.", "a person {}.", "someone {}.",
          "a video of someone {}.")
PRESETS: dict[str, tuple[str, ...]] = dict(zip(TEMPLATE_PRESETS, (KINETICS, UCF101, SIMPLE)))
# The templates where none are given (the API's default, the app outside a project); params.yaml names its own
TEMPLATES = KINETICS
PROMPT_BATCH = 256  # prompts through the text tower per forward pass (open_clip batches classes the same way)


@dataclass
class ClassText:
    """Each class's text side: unit-length embeddings float32 (C, D), and the checkpoint's own scoring of a cosine
    (pipeline.heads.estimators.ZeroShotModule): scale * cos + bias, through a sigmoid for SigLIP. CLIP: its learned
    exp(logit_scale) (100 for the published checkpoints), no bias, softmax; SigLIP: its learned exp(logit_scale) and
    logit_bias. templates: the prompt templates the embeddings were made with (a head records them)."""

    embeddings: np.ndarray
    scale: float = LOGIT_SCALE
    bias: float = 0.0
    sigmoid: bool = False
    templates: tuple[str, ...] = TEMPLATES


@dataclass
class QueryText:
    """A free-text search query's side: its unit-length embedding float32 (D,) (the mean of its templated prompts'
    unit embeddings, made unit again), the checkpoint's scoring (as ClassText: scale * cos + bias, sigmoid for
    SigLIP) and the prompts it was made from."""

    embedding: np.ndarray
    scale: float
    bias: float
    sigmoid: bool
    prompts: list[str]


def readable_name(class_name: str) -> str:
    """A class name as prompts want it: a name written with spaces is used as it is ("playing guitar", "Playing
    Guitar", "backflip (human)"); else its words are split at underscores (or at hyphens when it has none), at
    CamelCase and between letters and digits, and lower-cased, acronyms kept: "ApplyEyeMakeup" -> "apply eye
    makeup", "YoYo" -> "yo yo", "brush_hair" -> "brush hair", "walking_while_reading_book" -> "walking while reading
    book", "TVShow" -> "TV show", "Jump2Rope" -> "jump 2 rope", "Skijet" -> "skijet"."""
    name = class_name.strip()
    if " " in name and "_" not in name:
        return name
    parts = [p for p in name.replace("_" if "_" in name else "-", " ").split() if p]
    words = [w for part in parts for w in _camel_words(part)]
    if not words:
        return name or class_name
    lowered = any(c.islower() for c in name)  # an all-capitals name is lower-cased whole
    return " ".join(w if lowered and _acronym(w) else w.lower() for w in words)


def _camel_words(token: str) -> list[str]:
    """A token cut into its words: before a capital that follows a lower-case letter ("EyeMakeup"), before the last
    capital of a run followed by lower case ("TVShow"), between a letter and a digit, and between a digit and a word
    ("2Rope"), a capital right after digits staying with them ("3D")."""
    cuts = [0]
    for i in range(1, len(token)):
        a, b, c = token[i - 1], token[i], token[i + 1:i + 2]
        if ((a.islower() and b.isupper()) or (a.isupper() and b.isupper() and c.islower())
                or (a.isalpha() and b.isdigit()) or (a.isdigit() and b.isalpha() and (b.islower() or c.islower()))):
            cuts.append(i)
    return [token[i:j] for i, j in zip(cuts, cuts[1:] + [len(token)])]


def _acronym(word: str) -> bool:
    """A word kept in capitals: two characters or more, a capital among them, no lower case ("TV", "BMX", "3D")."""
    return len(word) >= 2 and any(c.isupper() for c in word) and not any(c.islower() for c in word)


def check_templates(templates) -> tuple[str, ...]:
    """templates as a tuple; ConfigError, one line, for none, a template that is not text, or one without exactly
    one {} (pipeline.settings.template_problem)."""
    if isinstance(templates, str) or not templates:
        raise ConfigError("zero-shot needs a non-empty list of prompt templates, each holding {} once")
    for t in templates:
        problem = "is not text" if not isinstance(t, str) else template_problem(t)
        if problem:
            raise ConfigError(f"the prompt template {printable(repr(t))} {problem}")
    return tuple(templates)


def preset_templates(setting: str | list[str]) -> tuple[str, ...]:
    """params.yaml's zeroshot.templates (validated: a preset's name or a list of templates) as the templates."""
    return PRESETS[setting] if isinstance(setting, str) else check_templates(setting)


def class_prompts(class_name: str, templates: tuple[str, ...] = TEMPLATES) -> list[str]:
    """The prompts for one class name or query: its readable_name in each template."""
    name = readable_name(class_name)
    return [t.format(name) for t in templates]


def project_templates(head: ZeroShotHead | None = None) -> tuple[str, ...]:
    """The templates zero-shot uses in the current folder, the one rule for the app and search: those recorded in the
    project's zero-shot head (`head` when the caller has it loaded, else HEADS[FROM_TEXT].file when it exists),
    else params.yaml's zeroshot.templates, else TEMPLATES when there is no params.yaml. HeadError for a damaged head
    file, ConfigError for a wrong setting."""
    if head is None and Path(HEADS[FROM_TEXT].file).is_file():
        head = load_head(HEADS[FROM_TEXT].file)
    if getattr(head, "templates", None):  # a head made from bare embeddings records none
        return tuple(head.templates)
    if Path(PARAMS).is_file():
        return preset_templates(load_params()["zeroshot"]["templates"])
    return TEMPLATES


@dataclass(frozen=True)
class TextTower:
    """A checkpoint's tokenizer and model (CLIPModel or SiglipModel in eval mode, its vision side dropped: the text
    tower and the learned scoring), loaded once per process by text_tower."""

    family: str
    tokenizer: object
    model: torch.nn.Module

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Unit-length embeddings float32 (N, D) of N prompts, PROMPT_BATCH at a time, tokenized as the family was
        trained (CLIP: padded to the longest prompt of the batch, which its causal mask keeps out of every prompt's
        embedding; SigLIP: padding="max_length" to its text length)."""
        padding = {"padding": True} if self.family == "clip" else {
            "padding": "max_length", "max_length": self.model.config.text_config.max_position_embeddings}
        out = []
        for start in range(0, len(prompts), PROMPT_BATCH):
            tokens = self.tokenizer(prompts[start:start + PROMPT_BATCH], truncation=True, return_tensors="pt",
                                    **padding)
            pooled = self.model.text_model(**tokens).pooler_output  # (n, hidden); SigLIP's includes its head
            emb = self.model.text_projection(pooled) if self.family == "clip" else pooled  # (n, D)
            out.append(emb / emb.norm(dim=1, keepdim=True))
        return torch.cat(out).float()

    def scoring(self) -> tuple[float, float, bool]:
        """(scale, bias, sigmoid): the checkpoint's learned scoring of a cosine (ClassText)."""
        bias = float(self.model.logit_bias) if self.family == "siglip" else 0.0
        return float(self.model.logit_scale.exp()), bias, self.family == "siglip"


_LOADING = threading.Lock()  # the app's sessions are threads: one loads a tower while the others wait for it


def text_tower(model_id: str, download: bool = True) -> TextTower:
    """The checkpoint's TextTower, loaded once per process (the last two checkpoints kept; a local folder whose files
    change is loaded again). ConfigError for a checkpoint of another family or not on disk with the hub off;
    HeadError when it has no tokenizer or text tower, or cannot be loaded."""
    folder = Path(model_id)
    version = tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in folder.iterdir() if f.is_file())
                    ) if folder.is_dir() else ()
    with _LOADING:
        return _load_text_tower(model_id, download, version)


@lru_cache(maxsize=2)
def _load_text_tower(model_id: str, download: bool, version: tuple) -> TextTower:
    """text_tower's load (version: the folder's files, in the cache key only)."""
    family = model_family(model_id, download)
    from transformers import AutoTokenizer, CLIPModel, SiglipModel

    try:
        tokenizer, model = load_pretrained((AutoTokenizer, CLIPModel if family == "clip" else SiglipModel),
                                           model_id, download)
        model.eval().requires_grad_(False)
    except ConfigError:  # load_pretrained's own: the model not on disk and the hub off, with the next step
        raise
    except (OSError, ValueError) as e:  # transformers' own: no such files, or not a full checkpoint of the family
        raise HeadError(f"cannot load the {family} text tower and tokenizer of {model_id!r}: "
                        f"{str(e).splitlines()[0]}") from None
    for part in ("vision_model", "visual_projection"):  # kept for a process: not the vision side (the encoder's own)
        if hasattr(model, part):
            delattr(model, part)
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # transformers makes an empty one when files are missing
        raise HeadError(f"{model_id!r} has no tokenizer (only special tokens): zero-shot needs the checkpoint's own "
                        "tokenizer files beside its weights")
    return TextTower(family, tokenizer, model)


def text_embeddings(model_id: str, class_names: list[str], templates: tuple[str, ...] = TEMPLATES,
                    download: bool = True) -> ClassText:
    """Each class's text side (ClassText), open_clip's build_zero_shot_classifier: each class's readable name in every
    template, each prompt's embedding made unit length, their mean made unit length again, with the checkpoint's
    learned logit scale (and SigLIP's bias) and the templates used.

    ConfigError without a class name, for a wrong template, or for a checkpoint of another family; HeadError when
    the checkpoint has no tokenizer or text tower, or cannot be loaded.
    """
    if not class_names:
        raise ConfigError("zero-shot needs at least one class name")
    templates = check_templates(templates)
    tower = text_tower(model_id, download)
    prompts = [p for name in class_names for p in class_prompts(name, templates)]
    emb = tower.encode(prompts).reshape(len(class_names), len(templates), -1).mean(dim=1)  # (C, D)
    emb = emb / emb.norm(dim=1, keepdim=True)
    return ClassText(emb.numpy().astype(np.float32), *tower.scoring(), templates)


def query_embedding(model_id: str, text: str, templates: tuple[str, ...] = TEMPLATES,
                    download: bool = True) -> QueryText:
    """A free-text search query ("someone falls") through the same ensemble as the classes (text_embeddings): its
    prompts' unit embeddings averaged and made unit length, float32 (D,), with the checkpoint's scoring. Pass the
    project's templates (project_templates()) to search as its zero-shot head classifies. ConfigError for an empty
    query or a wrong template; HeadError as text_embeddings."""
    if not text.strip():
        raise ConfigError("the search query is empty: type what to look for")
    templates = check_templates(templates)
    tower = text_tower(model_id, download)
    prompts = class_prompts(text, templates)
    mean = tower.encode(prompts).mean(dim=0)
    return QueryText((mean / mean.norm()).numpy().astype(np.float32), *tower.scoring(), prompts)


def zeroshot_head(text: ClassText | np.ndarray, class_names: list[str], attrs: dict,
                  templates: tuple[str, ...] | None = None) -> ZeroShotHead:
    """A fitted ZeroShotHead scoring videos by the cosine of their mean frame embedding to each class's text
    embedding, the family's way (ClassText; a bare float32 (C, D) array: CLIP's softmax at scale LOGIT_SCALE), and
    recording the templates the text was made with (ClassText's own unless given; none for a bare array). attrs: the
    encoder and sampling it serves (a cache's attrs, or an encoder's describe() plus num_frames and sampling),
    recorded in its metadata like any head's."""
    if not isinstance(text, ClassText):
        text = ClassText(np.asarray(text, np.float32), templates=())
    templates = text.templates if templates is None else tuple(templates)
    return ZeroShotHead(templates).fit(text.embeddings, class_names, attrs, text.scale, text.bias, text.sigmoid)
