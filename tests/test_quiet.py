"""A stage-one run in a log says what it does and nothing else: no runpy warning from the decode workers, no
transformers warning from the tiny CLIP, and progress as plain lines (no carriage return, no cursor movement)."""
import io
import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.progress import LOG_COLUMNS, LineBar, progress_bar
from tests.conftest import committed_params

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_stages_extract_writes_a_clean_log(dataset, tiny_clip, tmp_path):
    params = committed_params(data={"root": str(dataset)}, encoder={"model": tiny_clip},
                              extract={"num_frames": 4, "workers": 2})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = subprocess.run([sys.executable, "-m", "stages.extract"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # stderr a pipe, as in a log
    assert run.returncode == 0, run.stderr
    assert "7 encoded, 0 reused, 0 skipped" in run.stdout, run.stdout
    # the workers' forkserver preloads the main module's package and imports, not the module runpy re-runs
    assert "RuntimeWarning" not in run.stderr and "runpy" not in run.stderr, run.stderr
    assert "token_id" not in run.stderr and "Warning" not in run.stderr, run.stderr  # transformers' config checks
    assert "\r" not in run.stderr and "\x1b" not in run.stderr, repr(run.stderr)
    lines = run.stderr.splitlines()
    assert lines and all(line.startswith(("extract:", "hash:")) for line in lines), lines  # the bars as lines
    assert lines[-1].startswith("extract: 100%|") and "7/7" in lines[-1], lines


def test_a_bar_in_a_log_is_lines_and_on_a_terminal_is_tqdms(monkeypatch):
    log = io.StringIO()
    for _ in LineBar(range(3), file=log, mininterval=0, desc="demo", ascii=True, ncols=LOG_COLUMNS):
        pass
    lines = log.getvalue().split("\n")
    assert lines[-1] == "" and lines[0].startswith("demo:   0%|") and lines[-2].startswith("demo: 100%|###"), lines
    assert "" not in lines[:-1] and "3/3" in lines[-2], lines
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    cleared = io.StringIO()
    for _ in LineBar(range(2), file=cleared, mininterval=0, leave=False):
        pass
    assert cleared.getvalue().splitlines()[-1].startswith("100%") and "\r" not in cleared.getvalue()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress_bar(range(1), disable=True), LineBar)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not isinstance(progress_bar(range(1), disable=True), LineBar)


def test_predict_says_what_it_loads_and_shows_progress_for_more_than_one_file(project, capsys, monkeypatch):
    from pipeline.heads.kinds import load_head
    from pipeline.paths import HEAD_FILES
    from pipeline.tools.cli import predict

    monkeypatch.chdir(project)
    model = load_head(HEAD_FILES["linear"]).meta_.features["encoder_model"]
    assert predict(["data/sitting"]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[0] == f"loading the encoder {model} ...", err  # the first seconds, said before they pass
    bar = [line for line in err if line.startswith("predict:")]
    assert bar and bar[-1].startswith("predict: 100%|") and "3/3" in bar[-1], err  # stderr: stdout keeps the answers
    assert len(captured.out.splitlines()) == 4 and "\r" not in captured.err
    assert predict(["data/sitting/sitting_0.mp4"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("loading the encoder") and "predict:" not in err, err  # one file: no bar


def test_the_apps_decode_workers_rerunning_its_main_file_draw_nothing():
    """multiprocessing re-runs the main module's file in each decode worker as __mp_main__; Streamlit's main module
    is app/streamlit_app.py: there it draws nothing (no "missing ScriptRunContext!") and imports no model."""
    app = ROOT / "app" / "streamlit_app.py"
    run = subprocess.run([sys.executable, "-c", "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__mp_main__');"
                          " print(sorted(m for m in sys.modules if m.startswith(('app.', 'torch', 'transformers'))))",
                          str(app)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
    assert "ScriptRunContext" not in run.stderr and run.stderr == "", run.stderr


def test_the_tiny_clip_and_siglip_build_load_and_encode_text_without_a_transformers_warning(tiny_clip, tmp_path):
    """The tiny models' saved configs carry their own tokenizer's special ids (tiny_clip.py), and transformers' own
    default SigLIP text config, which it builds to print any SigLIP config and which warns about its CLIP ids, is
    kept quiet at the source (pipeline.embed.hub.quiet_default_text_configs): neither building a tiny SigLIP, nor
    loading it or the tiny CLIP, nor their text towers make transformers warn about bos_token_id or eos_token_id.
    (torch: ONNX Runtime's one-time export says so on stderr, in whichever test of the session comes first.)"""
    run = subprocess.run([sys.executable, "-c", "import sys; from pipeline.embed.tiny_clip import build_tiny_clip; "
                          "from pipeline.heads.zeroshot import query_embedding, text_embeddings; "
                          "from pipeline.embed.encoder import load_encoder; "
                          "siglip = str(build_tiny_clip(sys.argv[2], family='siglip')); "
                          "[(load_encoder(m, 'cpu', backend='torch'), text_embeddings(m, ['walking', 'sitting']), "
                          "query_embedding(m, 'someone falls')) for m in (sys.argv[1], siglip)]",
                          tiny_clip, str(tmp_path / "siglip")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0 and "token_id" not in run.stderr and "Warning" not in run.stderr, run.stderr
    assert run.stderr == "", run.stderr
