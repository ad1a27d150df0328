"""`python -m deploy {plan,deploy,destroy} --stage STAGE`: Vidline's one deploy command.

`plan` prints the steps without touching AWS. `deploy` and `destroy` run
them against AWS with your usual credentials, or with `--endpoint-url`
against a stand-in (moto), skipping and naming the steps it cannot do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.aws import Aws, DeployError
from deploy.executor import ROOT, Executor, Project, summary
from deploy.plan import Target, plan_deploy, plan_destroy
from deploy.stages import STAGES_FILE, load_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    parser.add_argument("command", choices=["plan", "deploy", "destroy"])
    parser.add_argument("--stage", default="dev", help="a stage of infra/stages.toml (default dev)")
    parser.add_argument("--region", help="overrides the stage's region")
    parser.add_argument(
        "--endpoint-url", help="a stand-in for AWS (moto server): steps it cannot do are skipped"
    )
    parser.add_argument(
        "--layer-zip", type=Path, help="publish this ffmpeg layer zip instead of building one (CI, tests)"
    )
    parser.add_argument("--stages-file", default=str(STAGES_FILE), help=argparse.SUPPRESS)
    parser.add_argument("--project-dir", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--yes", action="store_true", help="destroy without asking")
    args = parser.parse_args(argv)

    stage = load_stage(args.stage, Path(args.stages_file), region=args.region)
    target = Target.moto(stage.region, args.endpoint_url) if args.endpoint_url else Target.aws(stage.region)
    where = args.endpoint_url or f"AWS {stage.region}"
    steps = plan_destroy(stage, target) if args.command == "destroy" else plan_deploy(stage, target)

    if args.command == "plan":
        print(f"Plan: deploy stage {stage.name} to {where} (nothing is changed)")
        for number, step in enumerate(steps, 1):
            print(f"{number:2}. {step.describe()}")
        return 0

    if args.command == "destroy" and not args.yes:
        print(f"This deletes stage {stage.name} on {where}: every video, account and file in it.")
        if input(f"Type the stage name ({stage.name}) to go on: ").strip() != stage.name:
            print("Nothing was deleted.")
            return 1

    layer_zip: Path | None = args.layer_zip
    executor = Executor(
        stage,
        target,
        Aws(stage.region, args.endpoint_url),
        Project(args.project_dir),
        layer_builder=(lambda _out_dir: layer_zip) if layer_zip else None,
    )
    try:
        outcome = executor.run(steps)
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.command == "deploy":
        print("\n".join(summary(stage, outcome)))
    else:
        print(f"Stage {stage.name} is gone.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
