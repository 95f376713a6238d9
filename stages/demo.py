"""DVC stage `demo`: render the stick-figure demo dataset to data/demo (the default data.root)."""
from pipeline.data.demo import DemoConfig, make_demo_dataset
from stages import config, read_params, stage


@stage("demo")
def main() -> None:
    cfg = config(DemoConfig, read_params()["demo"], "demo")
    files = make_demo_dataset(cfg)
    print(f"{len(files)} demo clips written to {cfg.out_dir}")


if __name__ == "__main__":
    main()
