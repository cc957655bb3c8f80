"""Command line of the steps, generated from the contracts.

    python -m steps NAME [--root DIR] [--channel NAME=PATH] [--output NAME=PATH] [--<hyperparameter> VALUE]
    python -m steps train                  SageMaker's entry: the step comes from OPENEDS_STEP or the
                                           `step` hyperparameter (default train-seg)
    python -m steps describe NAME          the contract as JSON (hyperparameters as JSON Schema)
    python -m steps validate-contract NAME --root DIR   check a root without running the step
    python -m steps list                   the steps
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, Literal, NoReturn, get_args, get_origin

from pydantic.fields import FieldInfo

from contracts import ContractError, Layout, StepContract, all_contracts, get_contract
from contracts.base import decode_value, shorten
from steps.runtime import (
    check_channels,
    configure_logging,
    fail,
    failure_reason,
    load_raw_hyperparameters,
    resolve_hyperparameters,
    run_step,
)

log = logging.getLogger("steps")


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


class CommandLineParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting: a bad flag is a contract error like any other, so it
    reaches the failure file (where KFP and SageMaker users look), not only stderr."""

    def error(self, message: str) -> NoReturn:
        raise ContractError(f"command line: {message}")


def value_limits(field: FieldInfo) -> str:
    """'one of a, b; ' or 'at least 0.4, at most 1; ' for a field's allowed values (empty when
    unconstrained), so --help says what the contract accepts."""
    literals = [field.annotation, *get_args(field.annotation)]
    choices = [value for kind in literals if get_origin(kind) is Literal for value in get_args(kind)]
    if choices:
        return "one of " + ", ".join(str(value) for value in choices) + "; "
    words = {"Ge": "at least", "Gt": "above", "Le": "at most", "Lt": "below"}
    bounds = [f"{words[type(rule).__name__]} {getattr(rule, type(rule).__name__.lower())}"
              for rule in field.metadata if type(rule).__name__ in words]
    return ", ".join(bounds) + "; " if bounds else ""


def build_parser(contract: StepContract) -> argparse.ArgumentParser:
    parser = CommandLineParser(prog=f"python -m steps {contract.name}", description=contract.summary)
    parser.add_argument("--root", default=None, help="layout root (default: $SAGEMAKER_BASE_DIR or /opt/ml)")
    parser.add_argument("--channel", action="append", default=[], metavar="NAME=PATH",
                        help="input channel folder override (KFP artifact paths)")
    parser.add_argument("--output", action="append", default=[], metavar="NAME=PATH",
                        help="output folder override (KFP artifact paths)")
    group = parser.add_argument_group("hyperparameters (override input/config/hyperparameters.json)")
    for name, field in contract.hyperparameters.model_fields.items():
        help_text = f"{field.description or ''} ({value_limits(field)}default: {json.dumps(field.default)})"
        if field.annotation is bool:
            group.add_argument(flag_name(name), dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag_name(name), dest=name, default=argparse.SUPPRESS, metavar="VALUE",
                               help=help_text)
    return parser


def parse_pairs(pairs: Sequence[str], what: str, names: Sequence[str]) -> dict[str, str]:
    """NAME=PATH pairs; a NAME the contract does not declare (a typo would otherwise be ignored, and
    the step would read or write the default folder) is refused, listing the declared ones."""
    parsed = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ContractError(f"--{what} {pair!r}: expected NAME=PATH")
        if name not in names:
            raise ContractError(f"--{what} {pair!r}: no {what} named {name!r} (this step's: {', '.join(names)})")
        parsed[name] = path
    return parsed


def layout_from_args(contract: StepContract, args: dict[str, Any]) -> Layout:
    """The layout a parsed command line names (its --root, --channel and --output), popped from `args`."""
    channels = parse_pairs(args.pop("channel"), "channel", [c.name for c in contract.channels])
    outputs = parse_pairs(args.pop("output"), "output", [o.name for o in contract.outputs])
    return Layout.resolve(args.pop("root"), channels, outputs)


def root_from_argv(argv: Sequence[str]) -> str | None:
    """The --root a command line names, read even when the rest of it does not parse."""
    parser = CommandLineParser(add_help=False)
    parser.add_argument("--root", default=None)
    try:
        return parser.parse_known_args(list(argv))[0].root
    except ContractError:  # `--root` without its value
        return None


def run_command(step: str, argv: Sequence[str]) -> int:
    try:
        contract = get_contract(step)
        args = vars(build_parser(contract).parse_args(argv))
        layout = layout_from_args(contract, args)
        cli_values = {key: decode_value(contract.hyperparameters, key, value) for key, value in args.items()}
    except ContractError as error:
        configure_logging()
        return fail(Layout.resolve(root_from_argv(argv)), step, str(error))
    return run_step(contract.name, layout, cli_values)


def sagemaker_train(argv: Sequence[str]) -> int:
    """`docker run IMAGE train`: which training step runs is a setting, not an argument; a job
    with several hosts re-enters here under torchrun, once per rank."""
    from steps import sagemaker

    configure_logging()
    layout = Layout.resolve(None)
    try:
        raw = load_raw_hyperparameters(layout, os.environ)
        # What the client sent, as sent: SDKs encode values differently (str(v), json.dumps(v)).
        log.info("SageMaker train: hyperparameters as received %s; SM_* variables: %s", shorten(json.dumps(raw), 2_000),
                 ", ".join(sorted(k for k in os.environ if k.startswith("SM_"))) or "none")
        step = sagemaker.select_step(raw, os.environ)
        sagemaker.launch_distributed(layout, argv)  # returns only on one host or inside torchrun
    except ContractError as error:  # the failure file, and its reason on stderr (the SDK's log, CloudWatch)
        return fail(layout, "train", str(error))
    except Exception as error:  # noqa: BLE001 - as run_step: every failure must reach the failure file
        return fail(layout, "train", failure_reason(error), traceback.format_exc(), code=1)
    return run_command(step, list(argv))


def validate_contract(step: str, argv: Sequence[str]) -> int:
    """Check a root's hyperparameters and channels without running the step."""
    contract = get_contract(step)
    args = vars(build_parser(contract).parse_args(argv))
    try:
        layout = layout_from_args(contract, args)
        cli_values = {key: decode_value(contract.hyperparameters, key, value) for key, value in args.items()}
        hp = resolve_hyperparameters(contract, layout, cli_values)
        check_channels(contract, layout, hp)
    except ContractError as error:
        print(f"INVALID {step}: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"step": step, "valid": True, "root": str(layout.root),
                      "hyperparameters": hp.model_dump(mode="json")}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "list":
            for contract in all_contracts().values():
                print(f"{contract.name:16s} {contract.summary}")
            return 0
        if command == "describe":
            print(json.dumps(get_contract(rest[0]).describe(), indent=2) if rest else
                  json.dumps({n: c.describe() for n, c in all_contracts().items()}, indent=2))
            return 0
        if command == "validate-contract":
            if not rest or rest[0].startswith("-"):
                raise ContractError("validate-contract: name the step first (python -m steps validate-contract "
                                    "NAME --root DIR; `python -m steps list` lists them)")
            return validate_contract(rest[0], rest[1:])
        if command == "train":
            return sagemaker_train(rest)
        return run_command(command, rest)
    except ContractError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
