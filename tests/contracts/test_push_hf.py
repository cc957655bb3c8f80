"""push-hf's contract: repo ids and branches the Hub would refuse are refused before anything is written."""

from __future__ import annotations

import pytest

from contracts import ContractError, get_contract


@pytest.mark.parametrize("repo_id", ["Conner/sddec25-01", "ab/c_d.e-f", "a_/b", "_a/b_", "../..", "a/b..c", "a/b--c",
                                     "-a/b", "a/b.", "a/b/c", "a/b.git", "é/b", "o/" + "x" * 96, "o/" + "x" * 97])
def test_repo_ids_are_refused_exactly_when_the_hub_would_refuse_them(repo_id):
    """The Hub's validator used to run only after every shard was written (exit 1, not 2). (The
    contract also asks for the owner, which the Hub would take from the token.)"""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
        hub_accepts = True
    except ValueError:
        hub_accepts = False
    try:
        get_contract("push-hf").parse_hyperparameters({"repo_id": repo_id})
        accepted = True
    except ContractError as error:
        assert str(error).startswith("hyperparameter 'repo_id'")
        accepted = False
    assert accepted == hub_accepts


@pytest.mark.parametrize("revision", ["", "-x", " main"])
def test_an_empty_or_odd_branch_is_refused(revision):
    with pytest.raises(ContractError, match="hyperparameter 'revision'"):
        get_contract("push-hf").parse_hyperparameters({"revision": revision})
