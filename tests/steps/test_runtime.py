"""The step runtime on a real step's contract: hyperparameter sources, failure files, locking."""

import contextlib
import json

import pytest

from contracts import ContractError, Layout, get_contract
from steps.runtime import StepError, StepLock, failure_reason, resolve_hyperparameters, write_failure


def _root(tmp_path, hyperparameters):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return Layout.resolve(tmp_path, env={})


def test_precedence_file_dotenv_env_cli(tmp_path):
    layout = _root(tmp_path, {"epochs": "5", "lr": "0.1", "batch_size": "4", "seed": "1"})
    dotenv = tmp_path / "settings.env"
    dotenv.write_text("OPENEDS_LR=0.2\nOPENEDS_BATCH_SIZE=6\n")
    env = {"OPENEDS_ENV_FILE": str(dotenv), "OPENEDS_BATCH_SIZE": "7", "OPENEDS_SEED": "3"}
    hp = resolve_hyperparameters(get_contract("train-seg"), layout, {"seed": 9}, env=env)
    assert (hp.epochs, hp.lr, hp.batch_size, hp.seed) == (5, 0.2, 7, 9)


def _tuned(layout, best_params):
    folder = layout.channel("tuned")
    folder.mkdir(parents=True)
    (folder / "best_params.json").write_text(best_params if isinstance(best_params, str) else json.dumps(best_params))


def test_tuned_channel_overrides_the_file_and_yields_to_env_and_flags(tmp_path):
    layout = _root(tmp_path, {"lr": 0.1, "batch_size": 4, "weight_decay": 0.5, "epochs": 3})
    _tuned(layout, {"lr": 0.002, "batch_size": 8, "weight_decay": 0.001})
    hp = resolve_hyperparameters(get_contract("train-seg"), layout, {"batch_size": 16},
                                 env={"OPENEDS_WEIGHT_DECAY": "0.01"})
    assert (hp.lr, hp.batch_size, hp.weight_decay, hp.epochs) == (0.002, 16, 0.01, 3)


def test_unfed_tuned_channel_changes_nothing(tmp_path):
    layout = _root(tmp_path, {"lr": 0.1})
    layout.channel("tuned").mkdir(parents=True)  # an empty folder is an unfed channel
    assert resolve_hyperparameters(get_contract("train-seg"), layout, {}, env={}).lr == 0.1


@pytest.mark.parametrize("content, message", [
    (None, "^channel 'tuned': no best_params.json in "),
    ("{broken", "^channel 'tuned': .*best_params.json is not a usable settings file, a JSON object"),
    ("[0.1]", "^channel 'tuned': .*best_params.json is not a usable settings file, a JSON object"),
    ({"lr": -1}, "^hyperparameter 'lr'"),
    ({"n_trials": 3}, "^hyperparameter 'n_trials'"),  # a tune setting is not a train-seg one
])
def test_bad_tuned_channel_is_named(tmp_path, content, message):
    layout = _root(tmp_path, {})
    if content is None:
        layout.channel("tuned").mkdir(parents=True)
        (layout.channel("tuned") / "trials.csv").write_text("number\n")
    else:
        _tuned(layout, content)
    with pytest.raises(ContractError, match=message):
        resolve_hyperparameters(get_contract("train-seg"), layout, {}, env={})


def test_environment_value_is_validated_and_named(tmp_path):
    layout = _root(tmp_path, {})
    with pytest.raises(ContractError, match="^hyperparameter 'epochs'"):
        resolve_hyperparameters(get_contract("train-seg"), layout, {}, env={"OPENEDS_EPOCHS": "two"})


def test_malformed_hyperparameters_json_names_the_file(tmp_path):
    layout = _root(tmp_path, {})
    layout.hyperparameters_file.write_text("{not json")
    with pytest.raises(ContractError, match="^hyperparameters.json: not valid JSON"):
        resolve_hyperparameters(get_contract("train-seg"), layout, {}, env={})


def test_sm_hps_used_when_file_absent(tmp_path):
    layout = Layout.resolve(tmp_path, env={})
    hp = resolve_hyperparameters(get_contract("train-seg"), layout, {}, env={"SM_HPS": '{"epochs": "4"}'})
    assert hp.epochs == 4


def test_failure_file_first_line_and_secret_redaction(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_canary_secret_123")
    layout = Layout.resolve(tmp_path, env={})
    path = write_failure(layout, "push failed with token hf_canary_secret_123\nmore", "trace hf_canary_secret_123")
    text = path.read_text()
    assert text.splitlines()[0] == "push failed with token ***"
    assert "hf_canary_secret_123" not in text


def test_second_run_on_the_same_root_refuses(tmp_path):
    lock = Layout.resolve(tmp_path, env={}).lock_file
    assert lock.parent == tmp_path  # not under output/ or model/, which SageMaker packages
    with StepLock(lock):
        with pytest.raises(StepError, match="in use by another running step"):
            with StepLock(lock):
                pass
    with StepLock(lock):  # released after the first run
        pass


def test_every_step_module_declares_typed_hooks():
    from contracts import all_contracts
    from steps.runtime import StepHooks, hooks_of

    for contract in all_contracts().values():
        assert isinstance(hooks_of(contract), StepHooks), contract.name


def test_a_misspelt_or_missing_hook_fails_at_once():
    from steps.runtime import StepHooks, hooks_of

    with pytest.raises(TypeError, match="check_input"):
        StepHooks(run=lambda hp, io: {}, check_input=lambda hp, io: None)  # type: ignore[call-arg]
    contract = get_contract("download-kaggle").model_copy(update={"module": "types"})
    with pytest.raises(TypeError, match="defines no HOOKS"):
        hooks_of(contract)


def test_an_unexpected_error_names_the_system_error_beneath_it():
    """torch.save on a full disk raises "unexpected pos N vs M"; the cause a user can act on is the
    OSError underneath (/dev/full answers every write with ENOSPC)."""
    import torch

    handle = open("/dev/full", "wb")  # noqa: SIM115 - closing flushes, and fails again
    try:
        with pytest.raises(RuntimeError) as raised:
            torch.save({"weights": torch.zeros(100_000)}, handle)
    finally:
        with contextlib.suppress(OSError):
            handle.close()
    reason = failure_reason(raised.value)
    assert reason.startswith("OSError: [Errno 28] No space left on device (then RuntimeError: ")
    assert failure_reason(OSError(28, "No space left on device")) == "OSError: [Errno 28] No space left on device"
    assert failure_reason(ValueError("bad value")) == "ValueError: bad value"
    assert failure_reason(KeyError()) == "KeyError"


def test_validate_contract_without_a_step_name_says_so(capsys):
    from steps.__main__ import main

    assert main(["validate-contract"]) == 2
    assert main(["validate-contract", "--root", "/tmp"]) == 2
    assert "validate-contract: name the step first" in capsys.readouterr().err


def test_sigterm_outside_training_fails_the_step_with_143_and_commits_nothing(tmp_path):
    """`docker stop` on preprocess or download-kaggle used to end it silently (no failure file, no
    log line), leaving staging folders behind."""
    import signal
    import subprocess
    import sys

    root = tmp_path / "root"
    process = subprocess.Popen([sys.executable, "-m", "steps", "download-kaggle", "--root", str(root),
                                "--synthetic-train-frames", "3000", "--synthetic-validation-frames", "10",
                                "--synthetic-test-frames", "10"], stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "step download-kaggle: root" in line:  # the step is under way
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 143, rest[-2000:]
    first = (root / "output" / "failure").read_text().splitlines()[0]
    assert first.startswith("stopped by SIGTERM; nothing was committed") and first in rest
    assert "Traceback" not in rest
    data = root / "output" / "data"
    assert not (data / "raw").exists()
    assert not [p.name for p in data.iterdir() if "staging" in p.name] if data.is_dir() else True


def test_folders_in_input_data_that_are_not_channels_are_named(tmp_path, caplog):
    """A SageMaker job sending `training` instead of `train`, or a misspelt optional `tunned`,
    used to be ignored without a word."""
    from steps.runtime import check_channels

    contract = get_contract("train-seg")
    (tmp_path / "input" / "data" / "training").mkdir(parents=True)
    (tmp_path / "input" / "data" / "training" / "rows.arrow").write_text("x")
    (tmp_path / "input" / "data" / "tunned").mkdir()
    layout = Layout.resolve(tmp_path, env={})
    hp = contract.parse_hyperparameters({})
    with pytest.raises(ContractError) as refused:
        check_channels(contract, layout, hp)
    assert str(refused.value).startswith("channel 'train': missing or empty folder")
    assert str(refused.value).endswith("; input/data holds training, tunned, not a channel here")
    assert "input/data: training, tunned are not a channel of train-seg (its channels: train, validation" in caplog.text


def test_sigterm_is_not_swallowed_by_a_broad_except_and_waits_for_the_commit():
    """A frame reader's or a tracker's `except Exception` used to catch the stop (preprocess counted
    it as a bad frame and went on); and a stop in the middle of swapping outputs in could lose both
    the new and the previous output."""
    import os
    import signal
    import time

    from steps.runtime import SIGTERM_POLICY, StepTerminated

    def guarded_work() -> str:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here
        except Exception:  # noqa: BLE001 - the broad handler a library might have
            return "swallowed"
        return "finished"

    with SIGTERM_POLICY.active(None), pytest.raises(StepTerminated):
        guarded_work()
    with SIGTERM_POLICY.active(None), SIGTERM_POLICY.commit():
        assert guarded_work() == "finished"  # the commit goes on; the step then ends with it complete


def test_a_sigterm_caught_by_a_library_still_ends_the_step(tmp_path):
    """The stop is an exception; code that catches everything (or a finalizer it lands in) would keep
    the step running until SIGKILL. A backstop ends it with the failure file all the same."""
    import subprocess
    import sys

    code = (
        "import os, signal, sys, time\n"
        "from contracts import Layout\n"
        "from steps import runtime\n"
        "runtime.SIGTERM_BACKSTOP_S = 2.0\n"
        f"with runtime.SIGTERM_POLICY.active(Layout.resolve({str(tmp_path)!r}, env={{}})):\n"
        "    for tick in range(300):\n"
        "        try:\n"
        "            if tick == 0:\n"
        "                os.kill(os.getpid(), signal.SIGTERM)\n"
        "            time.sleep(0.1)\n"
        "        except BaseException:\n"
        "            pass\n"
        "sys.exit(0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr[-2000:]
    assert (tmp_path / "output" / "failure").read_text().startswith("stopped by SIGTERM")
