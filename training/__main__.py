"""``python -m training {latent-ode,mnist} ...``: one entry point, one module per trainer."""

import argparse

from training import latent_ode, mnist


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, trainer in (("latent-ode", latent_ode), ("mnist", mnist)):
        sub = commands.add_parser(name, help=trainer.__doc__.strip().splitlines()[0])
        trainer.add_arguments(sub)
        sub.set_defaults(run=trainer.run)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
