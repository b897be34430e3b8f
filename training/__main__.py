"""``python -m training {latent-ode,mnist} ...``: one entry point, one module per trainer."""

import argparse
from pathlib import Path

from service.model.checkpoint import CONFIG_FILE, train_state_path
from service.model.solver import SolverStepLimitError
from training import latent_ode, mnist

# What a user's data, flags or files can cause, reported as one line and exit status 2 rather
# than a traceback; any other exception is a bug in odecast and keeps its traceback.
USER_ERRORS = (ValueError, OSError, ArithmeticError, SolverStepLimitError)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, trainer in (("latent-ode", latent_ode), ("mnist", mnist)):
        sub = commands.add_parser(name, help=trainer.__doc__.strip().splitlines()[0])
        trainer.add_arguments(sub)
        sub.set_defaults(run=trainer.run)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        out = Path(args.out or ".")
        saved = (out / CONFIG_FILE).is_file() and train_state_path(out).is_dir()
        parser.exit(130, f"{parser.prog} {args.command}: interrupted; " + (
            "--resume continues from the last epoch saved\n" if saved else
            "no epoch had ended, so nothing was saved: run it again without --resume\n"))
    except USER_ERRORS as exc:
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")


if __name__ == "__main__":
    main()
