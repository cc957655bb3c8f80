"""Preprocessed splits from a Hugging Face dataset repo, downloaded once into a local cache folder.

Layout under `data_dir` (default ~/.cache/openeds):
    hf/<owner>__<name>/            the repo snapshot (parquet shards as push-hf writes them, or
                                   save_to_disk folders), complete once `.openeds-cache.json` exists
    hf-arrow/                      datasets' Arrow cache of the parquet shards (memory-mapped reads)

A run with a complete snapshot never calls the Hub and says it used the cache. Without one it
downloads with `huggingface_hub.snapshot_download` into a temporary folder and renames it into
place, so an interrupted download is never mistaken for a cache. Offline (HF_HUB_OFFLINE=1, or no
network) with no cache it fails at once with a message naming the repo and the cache folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import datasets

from steps.errors import StepError
from steps.outputs import loads_json

log = logging.getLogger(__name__)

MARKER = ".openeds-cache.json"


def snapshot_folder(data_dir: str | Path, repo_id: str) -> Path:
    return Path(data_dir).expanduser() / "hf" / repo_id.replace("/", "__")


def is_cached(data_dir: str | Path, repo_id: str) -> bool:
    return (snapshot_folder(data_dir, repo_id) / MARKER).is_file()


def download_snapshot(repo_id: str, folder: Path, revision: str | None = None) -> Path:
    """Download the dataset repo into `folder` (atomically: temp folder, marker, rename)."""
    from huggingface_hub import snapshot_download

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        snapshot_download(repo_id=repo_id, repo_type="dataset", revision=revision, local_dir=str(partial))
    except Exception as error:  # hub errors are httpx/hub exceptions, not OSError: report them all
        shutil.rmtree(partial, ignore_errors=True)
        raise StepError(
            f"hf_repo: cannot download dataset '{repo_id}' from the Hugging Face Hub "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'})\n"
            f"No cached copy in {folder}. Connect to the Hub (HF_TOKEN for a private repo), or fill the "
            f"cache folder from a machine that can, or train from the preprocess outputs instead.") from error
    files = sorted(str(p.relative_to(partial)) for p in partial.rglob("*")
                   if p.is_file() and ".cache" not in p.parts)
    (partial / MARKER).write_text(json.dumps({"repo_id": repo_id, "revision": revision or "main",
                                              "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              "files": files}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log.info("downloaded HF dataset %s (%d files) into %s in %.1fs", repo_id, len(files), folder,
             time.monotonic() - started)
    return folder


def load_hf_split(repo_id: str, *, split: str, data_dir: str | Path, revision: str | None = None) -> datasets.Dataset:
    """The `split` of HF dataset repo `repo_id`, from the cache under `data_dir` when it is there."""
    folder = snapshot_folder(data_dir, repo_id)
    if is_cached(data_dir, repo_id):
        info = loads_json((folder / MARKER).read_text())
        log.info("using the cached HF dataset %s at %s (downloaded %s); not downloading again",
                 repo_id, folder, info.get("downloaded_at", "earlier"))
    else:
        log.info("HF dataset %s is not cached in %s: downloading", repo_id, folder)
        download_snapshot(repo_id, folder, revision)
    return load_snapshot_split(folder, split, arrow_cache=Path(data_dir).expanduser() / "hf-arrow")


def load_snapshot_split(folder: Path, split: str, *, arrow_cache: Path) -> datasets.Dataset:
    """A split of a snapshot: a save_to_disk folder per split, a saved DatasetDict, or parquet shards."""
    if (folder / split / "state.json").is_file():
        return datasets.load_from_disk(str(folder / split))
    if (folder / "dataset_dict.json").is_file():
        splits = datasets.load_from_disk(str(folder))
        if split not in splits:
            raise StepError(f"hf_repo: split '{split}' not in {folder}\nSplits there: {', '.join(splits)}")
        return splits[split]
    try:
        # Parquet shards (push_to_hub's data/<split>-*.parquet): converted once to Arrow under
        # `arrow_cache`, memory-mapped after that; a local folder never touches the Hub.
        return datasets.load_dataset(str(folder), split=split, cache_dir=str(arrow_cache))
    except ValueError as error:  # unknown split, or no data files
        raise StepError(f"hf_repo: cannot read split '{split}' from the cached snapshot {folder}\n{error}") from error
