"""models.json's one reader: an entry is known by its revision, so an edited file is never taken
for what is deployed."""

import json

from deployments.model_source import ModelSource


def _write(path, max_tokens: int) -> None:
    weights = path.parent / "weights.gguf"
    weights.write_bytes(b"GGUF fake weights: only hashed here")
    path.write_text(json.dumps({"models": {"chat": {"type": "gguf", "path": "weights.gguf",
                                                    "default_max_tokens": max_tokens}}}))


def test_an_entry_is_given_only_at_the_revision_the_file_holds(tmp_path):
    config = tmp_path / "models.json"
    _write(config, 32)
    source = ModelSource(config, tmp_path / "cache")
    entry = source.read().models["chat"]
    revision = source.revision(entry)
    assert source.revisions(source.read().models) == {"chat": revision}
    assert source.entry("chat", revision) == entry
    assert source.entry("other", revision) is None

    _write(config, 64)  # a parameter changed: a new revision, the old one is no longer in the file
    edited = source.read().models["chat"]
    assert source.revision(edited) != revision
    assert source.entry("chat", revision) is None
    assert source.entry("chat", source.revision(edited)).default_max_tokens == 64


def test_new_weights_make_a_new_revision_and_an_unreadable_file_gives_no_entry(tmp_path):
    config = tmp_path / "models.json"
    _write(config, 32)
    source = ModelSource(config, tmp_path / "cache")
    revision = source.revision(source.read().models["chat"])
    (tmp_path / "weights.gguf").write_bytes(b"other weights")
    assert source.revision(source.read().models["chat"]) != revision
    config.write_text("{not json")
    assert source.entry("chat", revision) is None
