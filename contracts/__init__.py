"""Step contracts: the single source of truth for every step's interface."""

from contracts.base import Channel, ContractError, Hyperparameters, Output, StepContract
from contracts.layout import Layout

_MODULES = ("download_kaggle", "preprocess", "push_hf", "train_seg", "train_ellipse",
            "export_onnx", "validate", "tune", "predict")


def all_contracts() -> dict[str, StepContract]:
    """Every step's contract by step name, in pipeline order."""
    import importlib

    found = {}
    for module in _MODULES:
        try:
            contract = importlib.import_module(f"contracts.{module}").CONTRACT
        except ModuleNotFoundError as error:
            if error.name != f"contracts.{module}":
                raise
            continue
        found[contract.name] = contract
    return found


def get_contract(name: str) -> StepContract:
    contracts = all_contracts()
    if name not in contracts:
        raise ContractError(f"unknown step '{name}' (steps: {', '.join(contracts)})")
    return contracts[name]


__all__ = ["Channel", "ContractError", "Hyperparameters", "Layout", "Output", "StepContract",
           "all_contracts", "get_contract"]
