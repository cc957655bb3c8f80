"""tools.wheelhouse's check: the offline build's folder holds exactly one file per pin of the image
lock, each with a hash the lock lists (no download here: made-up files and a made-up lock)."""

from __future__ import annotations

import hashlib

from tools.wheelhouse import distribution, platforms, problems


def write_lock(path, entries):
    lines = ["# a lock", "# pyproject-dependencies-sha256: 0"]
    for name, version, digests in entries:
        lines.append(f"{name}=={version} \\")
        lines.extend(f"    --hash=sha256:{digest}" + (" \\" if i < len(digests) - 1 else "")
                     for i, digest in enumerate(digests))
        lines.append("    # via openeds-steps (pyproject.toml)")
    path.write_text("\n".join(lines) + "\n")


def test_file_names_give_the_pinned_name_and_version():
    assert distribution("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl") == ("torch", "2.13.0+cpu")
    assert distribution("kfp_server_api-2.17.3.tar.gz") == ("kfp-server-api", "2.17.3")
    assert distribution("python_dateutil-2.9.0.post0-py2.py3-none-any.whl") == ("python-dateutil", "2.9.0.post0")
    assert distribution("requirements.txt") is None
    assert platforms()[0] == "manylinux_2_28_x86_64" and "manylinux2014_x86_64" in platforms()


def test_every_pin_needs_one_file_with_a_locked_hash(tmp_path):
    folder = tmp_path / "cpu"
    folder.mkdir()
    good = folder / "six-1.17.0-py2.py3-none-any.whl"
    good.write_bytes(b"six")
    sdist = folder / "kfp_server_api-2.17.3.tar.gz"
    sdist.write_bytes(b"kfp")
    lock = tmp_path / "image.lock"
    write_lock(lock, [("six", "1.17.0", [hashlib.sha256(b"six").hexdigest(), "0" * 64]),
                      ("kfp-server-api", "2.17.3", [hashlib.sha256(b"kfp").hexdigest()])])
    assert problems(lock, folder) == []

    sdist.write_bytes(b"a rebuilt or tampered file")
    (folder / "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"numpy")
    (folder / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"six")
    found = problems(lock, folder)
    assert any("kfp_server_api-2.17.3.tar.gz: its sha256 is not among" in p for p in found), found
    assert any(p.startswith("numpy-2.0.0") and "not a distribution the lock pins" in p for p in found), found
    assert any(p.startswith("six-1.16.0") and "pins six==1.17.0" in p for p in found), found
    assert "kfp-server-api==2.17.3: no file" in found
