"""What push-hf uploads: parquet shards per split and a dataset card, and the upload itself.

The folder has the layout of `DatasetDict.push_to_hub` (`data/<split>-00000-of-00003.parquet`
plus `README.md` with the `configs`/`dataset_info` YAML the Hub's loader and viewer read), so a
dry run writes exactly the files a push uploads, and `load_dataset(repo_id)` reads them back.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import datasets
import pyarrow.parquet as pq
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard, DatasetCardData

log = logging.getLogger(__name__)

DATA_DIR = "data"
CARD_FILE = "README.md"
ROW_GROUP_BYTES = 100 << 20  # ~100 MB row groups: streaming readers fetch one at a time
COLUMN_DOCS = {
    "image": "uint8 [400, 640]: the camera frame after gamma 0.8 (LUT) and CLAHE (clip 1.5, 8x8 tiles)",
    "label": "uint8 [400, 640]: 1 where the pupil is (OpenEDS class 3), else 0",
    "spatial_weights": "float32 [400, 640]: morphological gradient of the label, Gaussian sigma 5",
    "dist_map": "float32 [2, 400, 640]: signed distance to background (0) and pupil (1), "
                "negative inside, over the image diagonal",
    "cx": "float32: pupil ellipse centre x / 640",
    "cy": "float32: pupil ellipse centre y / 400",
    "rx": "float32: first ellipse semi-axis / 377.36 (half the image diagonal)",
    "ry": "float32: second ellipse semi-axis / 377.36",
    "filename": "string: the raw frame's image file name",
    "preprocessed": "bool: always true",
}


class HubError(RuntimeError):
    """The upload cannot happen; the message's first line says why and what to do."""


@dataclass
class SplitFacts:
    """One split as uploaded: its rows, parquet files and the preprocess manifest's facts."""

    name: str
    rows: int
    files: list[str] = field(default_factory=list)
    parquet_bytes: int = 0
    manifest: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- parquet shards

def write_parquet_shards(dataset: datasets.Dataset, split: str, folder: Path, max_shard_size: str,
                         compression: str = "zstd") -> SplitFacts:
    """`data/<split>-xxxxx-of-yyyyy.parquet` in `folder`, shards of at most about `max_shard_size`
    of Arrow data; the schema keeps datasets' features, so `load_dataset` restores the dtypes."""
    nbytes = dataset.data.nbytes
    shards = max(1, min(len(dataset), nbytes // convert_file_size_to_int(max_shard_size) + 1))
    rows_per_group = max(1, ROW_GROUP_BYTES // max(1, nbytes // max(1, len(dataset))))
    facts = SplitFacts(name=split, rows=len(dataset))
    (folder / DATA_DIR).mkdir(parents=True, exist_ok=True)
    for index in range(shards):
        relative = f"{DATA_DIR}/{split}-{index:05d}-of-{shards:05d}.parquet"
        part = dataset.shard(num_shards=shards, index=index, contiguous=True).with_format("arrow")
        # Content-defined chunking keeps unchanged pages identical between pushes (Xet dedup).
        with pq.ParquetWriter(folder / relative, schema=dataset.features.arrow_schema,
                              compression=compression,
                              use_content_defined_chunking=True) as writer:
            for table in part.iter(batch_size=rows_per_group):
                writer.write_table(table)
        facts.files.append(relative)
        facts.parquet_bytes += (folder / relative).stat().st_size
    log.info("%s: %d rows in %d parquet shard(s), %.1f MB", split, facts.rows, shards,
             facts.parquet_bytes / 1e6)
    return facts


# ---------------------------------------------------------------- the dataset card

OPENEDS_LICENSE_NAME = "openeds-dataset-license"
OPENEDS_LICENSE_LINK = "https://research.fb.com/programs/openeds-challenge"
OPENEDS_CITATION = """@article{garbin2019openeds,
  title   = {OpenEDS: Open Eye Dataset},
  author  = {Garbin, Stephan J. and Shen, Yiru and Schuetz, Immo and Cavin, Robert and Hughes, Gregory and
             Talathi, Sachin S.},
  journal = {arXiv preprint arXiv:1905.03702},
  year    = {2019}
}"""

def card_metadata(splits: list[SplitFacts], features: datasets.Features) -> DatasetCardData:
    info = datasets.DatasetInfo(features=features, splits=datasets.SplitDict(
        {s.name: datasets.SplitInfo(s.name, num_bytes=s.parquet_bytes, num_examples=s.rows) for s in splits}))
    total = sum(s.rows for s in splits)
    return DatasetCardData(
        # OpenEDS is under Meta's own research-use terms, not an SPDX license: the Hub wants their
        # name and where to read them when `license` is "other".
        license="other", license_name=OPENEDS_LICENSE_NAME, license_link=OPENEDS_LICENSE_LINK,
        pretty_name="OpenEDS pupil segmentation, preprocessed",
        task_categories=["image-segmentation"], tags=["openeds", "eye-tracking", "pupil", "ellipse"],
        size_categories=_size_category(total),
        configs=[{"config_name": "default",
                  "data_files": [{"split": s.name, "path": f"{DATA_DIR}/{s.name}-*"} for s in splits]}],
        dataset_info=info._to_yaml_dict(),
    )


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < limit:
            return name
    return "100K<n<1M"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _split_rows(splits: list[SplitFacts]) -> list[tuple[Any, ...]]:
    rows = []
    for s in splits:
        counts = s.manifest.get("counts", {})
        rows.append((s.name, s.rows, counts.get("frames", "?"), counts.get("skipped_empty_pupil", "?"),
                     counts.get("bad", "?"), len(s.files), f"{s.parquet_bytes / 1e6:.1f} MB"))
    return rows


def _source_line(source: dict[str, Any]) -> str:
    kind = source.get("source", "unknown")
    line = f"- Source: `{kind}`"
    if kind in ("kaggle", "kagglehub") and source.get("dataset"):
        version = f", version {source['dataset_version']}" if source.get("dataset_version") else ""
        line += f" (Kaggle dataset `{source['dataset']}`{version})"
    if kind == "synthetic" and "seed" in source:
        line += f", generator seed {source['seed']}"
    return line


def _provenance_lines(manifest: dict[str, Any]) -> list[str]:
    origin = manifest.get("provenance", {})
    source = origin.get("raw_source", {})
    lines = [f"- Raw frames: {origin.get('layout_description', 'unknown layout')}", _source_line(source)]
    versions = origin.get("versions", {})
    if versions:
        lines.append("- Built with " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    if source.get("source") in ("kaggle", "kagglehub", "local"):
        lines.append("- OpenEDS (Meta Reality Labs) has its own research-use terms: check them before "
                     "redistributing or using these rows.")
    elif source.get("source") == "synthetic":
        lines.append("- The frames are generated (OpenEDS-like), not real eye images.")
    return lines


def card_text(repo_id: str, splits: list[SplitFacts], features: datasets.Features,
              compression: str) -> str:
    """README.md: YAML header (schema, splits, configs) and sections on schema, splits,
    preprocessing, provenance and loading."""
    manifest = next((s.manifest for s in splits if s.manifest), {})
    params = manifest.get("preprocessing", {})
    body = [
        "# OpenEDS pupil segmentation, preprocessed", "",
        "Near-eye infrared frames with a binary pupil mask and every training target precomputed by "
        "the `preprocess` step of openeds-steps, so training reads rows instead of recomputing them.", "",
        "## Schema", "", _table(("column", "type and meaning"), [(f"`{n}`", COLUMN_DOCS.get(n, str(f)))
                                                               for n, f in features.items()]), "",
        "## Splits", "", _table(("split", "rows", "raw frames", "skipped (empty pupil)", "bad", "parquet files",
                                 f"size ({compression})"), _split_rows(splits)), "",
        "## Preprocessing", "",
        _table(("setting", "value"), [(key, value) for key, value in params.items()]
               + [("backend", manifest.get("backend", "?"))]), "",
        "Per frame, in order: binarize (class 3 -> 1, else 0; frames without pupil are skipped), "
        "gamma LUT `255 * linspace(0, 1, 256) ** gamma` (truncated to uint8), CLAHE, ellipse by "
        "`cv2.fitEllipse` on the largest contour (fewer than 5 points or a degenerate fit: a circle "
        "from the moments, r = sqrt(area / pi)), spatial weights, signed distance maps "
        "(`edt(outside) - edt(inside)` over sqrt(640^2 + 400^2)).", "",
        "## Provenance", "", *_provenance_lines(manifest), "",
        "## Loading", "", "```python", "from datasets import load_dataset", "",
        f'train = load_dataset("{repo_id}", split="train").with_format("numpy")', "```", "",
        "## License and citation", "",
        f"OpenEDS frames and labels are under the OpenEDS dataset terms ({OPENEDS_LICENSE_LINK}); "
        "generated frames follow the schema but hold no OpenEDS data. Cite OpenEDS when you use it:", "",
        "```bibtex", OPENEDS_CITATION, "```", "",
    ]
    content = f"---\n{card_metadata(splits, features).to_yaml()}\n---\n\n" + "\n".join(body)
    DatasetCard(content)  # parses it back: a malformed header fails here, not on the Hub
    return content


# ---------------------------------------------------------------- the upload

PROBE_PATH = "/api/whoami-v2"  # any HTTP answer (401 without a token) shows a live Hub


def check_reachable(endpoint: str, offline: bool, timeout: float = 5.0) -> None:
    """Fail in seconds, not after upload_folder's ~25 s of retries (or never, on a server that takes
    the connection and does not answer): one GET with a timeout, whose answer may be any status."""
    if offline:
        raise HubError(f"HF Hub: offline mode (HF_HUB_OFFLINE=1) forbids pushing to {endpoint}; "
                       f"unset it, or run with push=false for a dry run")
    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise HubError(f"HF_ENDPOINT {endpoint!r}: expected http(s)://HOST[:PORT]")
    try:
        urllib.request.urlopen(endpoint.rstrip("/") + PROBE_PATH, timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # the Hub answered
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise HubError(f"HF Hub: cannot reach {endpoint} ({type(error).__name__}: {reason}); check the "
                       f"network or HF_ENDPOINT, or run with push=false for a dry run") from error


# A Hub that stops answering mid-upload fails the push instead of hanging it (the client's default
# is no timeout); writes and reads of one request, not the whole upload.
HUB_TIMEOUT = {"connect": 10.0, "read": 300.0, "write": 300.0, "pool": 10.0}


def upload(folder: Path, repo_id: str, token: str, private: bool, revision: str,
           commit_message: str, endpoint: str | None = None) -> str:
    """Create the dataset repo if needed and upload `folder` as one commit; returns the commit URL."""
    import httpx
    import httpx2
    from huggingface_hub import HfApi, get_session
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    get_session().timeout = httpx2.Timeout(**HUB_TIMEOUT)  # the client every HfApi call shares
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder,
                                   revision=revision, commit_message=commit_message,
                                   ignore_patterns=["_manifest.json"],
                                   delete_patterns=[f"{DATA_DIR}/*.parquet"])
    except (HfHubHTTPError, httpx.HTTPError, httpx2.HTTPError, OfflineModeIsEnabled) as error:  # not OSErrors
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HubError(f"HF Hub: pushing to {repo_id} failed: {reason}") from error
    return commit.commit_url
