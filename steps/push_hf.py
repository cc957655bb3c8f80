"""push-hf: the preprocessed splits as parquet shards plus a dataset card, pushed to a HF dataset repo.

Both modes write the `upload` output first: `data/<split>-xxxxx-of-yyyyy.parquet` and `README.md`,
exactly the files a push sends (the runtime's `_manifest.json` is never uploaded). `push=true`
then uploads that folder as one commit with the token from `HF_TOKEN` (or the `HF_TOKEN_PATH`
file). The token and the Hub's reachability are checked before any work, so offline the step
fails in seconds with a clear failure file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import datasets

from contracts.push_hf import PushHfHyperparameters
from steps.data.hub import CARD_FILE, HubError, SplitFacts, card_text, check_reachable, upload, write_parquet_shards
from steps.data.precompute import FEATURES, MAP_COLUMNS
from steps.data.verify import is_saved_dataset
from steps.outputs import read_manifest
from steps.runtime import StepError, StepHooks, StepIO
from steps.secrets import register_secret

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_token() -> str:
    """HF_TOKEN, else the token file (HF_TOKEN_PATH, e.g. a mounted secret, or the `hf auth login`
    file under HF_HOME); exported as HF_TOKEN so that every log line and manifest redacts it."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
        path = Path(os.environ.get("HF_TOKEN_PATH") or home / "token").expanduser()
        token = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    if not token:
        raise StepError("HF_TOKEN: not set, and no token file (HF_TOKEN_PATH); push=true needs a token "
                        "with write access to the dataset repo, or run with push=false for a dry run")
    register_secret(token)  # a token read from a file is masked like HF_TOKEN's value
    os.environ["HF_TOKEN"] = token
    return token


def hub_endpoint() -> tuple[str, bool]:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/"), offline


def check_inputs(hp: PushHfHyperparameters, io: StepIO) -> None:
    for split in SPLITS:
        path = io.channel(split)
        if path is not None and not is_saved_dataset(path):
            raise StepError(f"channel '{split}': {path} is not a saved dataset (no state.json and "
                            f"dataset_info.json); give preprocess's `{split}` output")
    if hp.push:
        hub_token()
        endpoint, offline = hub_endpoint()
        try:
            check_reachable(endpoint, offline)
        except HubError as error:
            raise StepError(str(error)) from error


def load_split(split: str, io: StepIO) -> datasets.Dataset | None:
    path = io.channel(split)
    if path is None:
        return None
    dataset = datasets.load_from_disk(str(path))
    if not set(MAP_COLUMNS) & set(dataset.features):
        raise StepError(f"channel '{split}': compact rows (preprocess row_layout=compact) have no "
                        f"{' or '.join(MAP_COLUMNS)}; the published schema is the seed's: preprocess with "
                        "row_layout=spec to push")
    for name, feature in FEATURES.items():
        if dataset.features.get(name) != feature:
            raise StepError(f"channel '{split}': column {name} is {dataset.features.get(name)}, expected "
                            f"{feature} (preprocess's schema)")
    # Exactly the seed's columns (a kept raw_image stays local).
    return dataset.select_columns(list(FEATURES)) if set(dataset.features) != set(FEATURES) else dataset


def run(hp: PushHfHyperparameters, io: StepIO) -> dict[str, Any]:
    folder = io.output("upload")
    splits: list[SplitFacts] = []
    for split in SPLITS:
        dataset = load_split(split, io)
        if dataset is None or len(dataset) == 0:
            log.info("%s: %s, not uploaded", split, "no channel" if dataset is None else "0 rows")
            continue
        facts = write_parquet_shards(dataset, split, folder, hp.max_shard_size, hp.parquet_compression)
        facts.manifest = read_manifest(io.require_channel(split)) or {}
        splits.append(facts)
    if not splits:
        raise StepError("channels train, validation, test: every split is empty; nothing to push")
    (folder / CARD_FILE).write_text(card_text(hp.repo_id, splits, FEATURES, hp.parquet_compression),
                                    encoding="utf-8")
    summary: dict[str, Any] = {"repo_id": hp.repo_id, "revision": hp.revision, "pushed": False,
                               "rows": {s.name: s.rows for s in splits},
                               "parquet_bytes": sum(s.parquet_bytes for s in splits),
                               "files": [CARD_FILE] + [f for s in splits for f in s.files]}
    io.annotate("upload", rows=summary["rows"], repo_id=hp.repo_id, dry_run=not hp.push)
    if hp.push:
        log.info("pushing %d files to dataset %s (revision %s)", len(summary["files"]), hp.repo_id, hp.revision)
        try:
            summary["commit_url"] = upload(folder, hp.repo_id, hub_token(), hp.private, hp.revision,
                                           hp.commit_message, endpoint=hub_endpoint()[0])
        except HubError as error:
            raise StepError(str(error)) from error
        summary["pushed"] = True
    else:
        log.info("dry run: %s holds exactly what push=true uploads to %s", io.outputs["upload"].final,
                 hp.repo_id)
    return summary


HOOKS = StepHooks(run=run, check_inputs=check_inputs)
