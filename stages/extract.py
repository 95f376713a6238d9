"""DVC stage `extract` (stage one): the videos of data.root -> CLIP frame embeddings in cache/features.h5.

The videos are those under data.root, one folder per class, or those the annotation file data.annotations names."""
from pipeline.threads import sleeping_openmp

sleeping_openmp()  # before torch loads OpenMP (the decode workers' server imports it): its idle threads sleep

from pipeline.decode.server import start_forkserver  # noqa: E402
from pipeline.embed.in_worker import worker_modules  # noqa: E402
from stages import read_params, stage, untracked_notes  # noqa: E402


@stage("extract")
def main() -> None:
    # The decode workers' server imports torch and the encoder's modules (seconds) while this process imports its
    # own, rather than after: the first video decodes sooner (bench/startup.py); transformers only where the workers
    # will load the encoder in full (worker_modules). The stage's heavy imports are here, not at the top, because the
    # server starts after them otherwise (server imports the standard library only; worker_modules, what the record
    # lookup needs: huggingface_hub's cache lookup, no torch), and every worker re-runs this
    # module by name and should find nothing to import.
    # The settings are read (and so checked) first: a wrong one stops the stage before any work, the server's
    # imports included.
    params = read_params()
    settings = (params["extract"], params["data"]["root"], params["data"]["annotations"], params["data"]["classes"],
                params["data"]["follow_links"], params["encoder"]["model"])
    start_forkserver(worker_modules(params["encoder"]["model"], params["extract"]["backend"]))
    from pipeline.extract.project import extract_config
    from pipeline.extract.runner import extract_features

    cfg = extract_config(*settings)
    for note in untracked_notes([cfg.annotations, cfg.classes], cfg.root):
        print(f"extract: note: {note}")
    print(extract_features(cfg))


if __name__ == "__main__":
    main()
