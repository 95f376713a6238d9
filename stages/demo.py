"""DVC stage `demo`: render the stick-figure demo dataset to data/demo (the default data.root)."""
import yaml

from pipeline.demo import DemoConfig, make_demo_dataset


def main() -> None:
    params = yaml.safe_load(open("params.yaml"))
    cfg = DemoConfig(**params["demo"])
    files = make_demo_dataset(cfg)
    print(f"{len(files)} demo clips written to {cfg.out_dir}")


if __name__ == "__main__":
    main()
