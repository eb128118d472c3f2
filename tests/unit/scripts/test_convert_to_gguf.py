"""scripts/convert_to_gguf.py takes only llama.cpp's converters out of the llama-cpp-python sdist, once."""

import io
import tarfile

from scripts import convert_to_gguf

MEMBERS = {
    "convert_hf_to_gguf.py": "hf", "convert_lora_to_gguf.py": "lora", "convert_hf_to_gguf_update.py": "no",
    "conversion/__init__.py": "pkg", "conversion/llama.py": "llama",
    "gguf-py/gguf/__init__.py": "gguf", "gguf-py/gguf/scripts/gguf_dump.py": "dump", "gguf-py/tests/t.py": "no",
    "src/llama.cpp": "no", "ggml/src/ggml.c": "no",
}


def _sdist(path):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {**{f"llama_cpp_python-9.9/vendor/llama.cpp/{k}": v for k, v in MEMBERS.items()},
                           "llama_cpp_python-9.9/llama_cpp/llama.py": "no"}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extracts_only_the_converters_and_reuses_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(convert_to_gguf, "llama_cpp_version", lambda: "9.9")
    out = convert_to_gguf.converter_dir(_sdist(tmp_path / "llama_cpp_python-9.9.tar.gz"))
    assert out == tmp_path / "cache" / "cache" / "llama.cpp-9.9"
    kept = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert kept == {name for name, text in MEMBERS.items() if text != "no"}
    assert (out / "convert_lora_to_gguf.py").read_text() == "lora"
    # the next call finds them: no sdist read, no download
    assert convert_to_gguf.converter_dir(tmp_path / "missing.tar.gz") == out
    assert not list((tmp_path / "cache" / "cache").glob("tmp*"))  # no leftovers of the extraction
