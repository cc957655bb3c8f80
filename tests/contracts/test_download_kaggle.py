"""download-kaggle's contract: a dataset handle cannot lead the download cache out of its folder."""

from __future__ import annotations

import pytest

from contracts import ContractError, get_contract


@pytest.mark.parametrize("handle", ["../..", "a/..", "./x", "a/b/c", "owner"])
def test_a_kaggle_handle_that_could_leave_the_download_cache_is_refused(handle):
    """`--dataset ../..` used to write (and clear) `versions/1/files` two folders above the cache."""
    with pytest.raises(ContractError, match="hyperparameter 'dataset'"):
        get_contract("download-kaggle").parse_hyperparameters({"dataset": handle})
    assert get_contract("download-kaggle").parse_hyperparameters({"dataset": "x_y/open-eds.v2"}).dataset
