"""The llama.cpp adapter writer: what it writes reads back as llama.cpp expects; what cannot fit is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from federation.errors import ConfigError

gguf = pytest.importorskip("gguf")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from training.export import export_llamacpp_lora  # noqa: E402

pytestmark = pytest.mark.unit

# SmolLM2-135M: hidden 576, 9 query heads and 3 key/value heads of 64, MLP 1536, 30 layers.
SHAPES = {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "down_proj": (576, 1536)}
PREFIX = "base_model.model.model.layers"


def _kind(module: str) -> str:
    return "mlp" if module.endswith(("gate_proj", "up_proj", "down_proj")) else "self_attn"


def write_adapter(
    directory: Path, weights: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]], **config: object
) -> Path:
    directory.mkdir(parents=True)
    tensors: dict[str, np.ndarray] = {}
    for (layer, module), (a, b) in weights.items():
        tensors[f"{PREFIX}.{layer}.{_kind(module)}.{module}.lora_A.weight"] = a
        tensors[f"{PREFIX}.{layer}.{_kind(module)}.{module}.lora_B.weight"] = b
    safetensors_numpy.save_file(tensors, str(directory / "adapter_model.safetensors"))
    options = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "bias": "none", "target_modules": [], **config}
    (directory / "adapter_config.json").write_text(json.dumps(options), encoding="utf-8")
    return directory


def random_pair(rng: np.random.Generator, module: str, rank: int = 4) -> tuple[np.ndarray, np.ndarray]:
    out_features, in_features = SHAPES[module]
    a = rng.standard_normal((rank, in_features)).astype(np.float32)
    b = rng.standard_normal((out_features, rank)).astype(np.float32)
    return a, b


def test_the_written_adapter_reads_back_with_llamacpp_metadata_shapes_and_permuted_q_k(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = {
        (0, "q_proj"): random_pair(rng, "q_proj"),
        (0, "k_proj"): random_pair(rng, "k_proj"),
        (3, "v_proj"): random_pair(rng, "v_proj", rank=6),
        (29, "down_proj"): random_pair(rng, "down_proj"),
    }
    peft_dir = write_adapter(tmp_path / "peft", weights)
    out = export_llamacpp_lora(peft_dir, tmp_path / "out" / "fed.gguf")
    assert out == tmp_path / "out" / "fed.gguf" and not list(out.parent.glob(".*"))  # no temporary left
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == sorted(
        f"blk.{layer}.{name}.weight.lora_{side}"
        for layer, name in ((0, "attn_q"), (0, "attn_k"), (3, "attn_v"), (29, "ffn_down"))
        for side in "ab"
    )
    # ggml shapes are numpy's reversed: lora_a is (in, r), lora_b is (r, out), as llama.cpp checks them.
    assert list(tensors["blk.0.attn_q.weight.lora_a"].shape) == [576, 4]
    assert list(tensors["blk.0.attn_k.weight.lora_b"].shape) == [4, 192]
    assert list(tensors["blk.3.attn_v.weight.lora_b"].shape) == [6, 192]
    assert list(tensors["blk.29.ffn_down.weight.lora_a"].shape) == [1536, 4]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in tensors.values())

    def data(name: str) -> np.ndarray:
        return np.asarray(tensors[name].data)

    a_q, b_q = weights[(0, "q_proj")]
    np.testing.assert_array_equal(data("blk.0.attn_q.weight.lora_a"), a_q)  # A is never permuted
    np.testing.assert_array_equal(data("blk.3.attn_v.weight.lora_b"), weights[(3, "v_proj")][1])
    # q rows, per head of 64: llama.cpp's converter interleaves the two rotary halves (0, 32, 1, 33, ...).
    head = np.arange(64).reshape(2, 32).T.reshape(-1)
    q_order = np.concatenate([h * 64 + head for h in range(9)])
    np.testing.assert_array_equal(data("blk.0.attn_q.weight.lora_b"), b_q[q_order])
    k_order = np.concatenate([h * 64 + head for h in range(3)])
    np.testing.assert_array_equal(data("blk.0.attn_k.weight.lora_b"), weights[(0, "k_proj")][1][k_order])


def test_rslora_scaling_is_folded_into_b(tmp_path: Path) -> None:
    a, b = random_pair(np.random.default_rng(1), "v_proj")
    out = export_llamacpp_lora(
        write_adapter(tmp_path / "peft", {(0, "v_proj"): (a, b)}, use_rslora=True), tmp_path / "o.gguf"
    )
    lora_b = next(t for t in gguf.GGUFReader(out).tensors if t.name.endswith("lora_b"))
    np.testing.assert_allclose(np.asarray(lora_b.data), b * 2.0, rtol=1e-6)  # alpha/sqrt(4) = (alpha/4) * 2


@pytest.mark.parametrize(
    ("weights", "config", "reason"),
    [
        ({(0, "q_proj"): (np.ones((4, 512), np.float32), np.ones((576, 4), np.float32))}, {}, "another model"),
        ({(0, "v_proj"): (np.ones((4, 576), np.float32), np.ones((576, 4), np.float32))}, {}, "another model"),
        ({(0, "q_proj"): (np.ones((4, 576), np.float32), np.ones((576, 3), np.float32))}, {}, "another model"),
        ({(30, "q_proj"): (np.ones((4, 576), np.float32), np.ones((576, 4), np.float32))}, {}, "has 30 layers"),
        ({(0, "lm_head"): (np.ones((4, 576), np.float32), np.ones((576, 4), np.float32))}, {}, "lm_head"),
        ({(0, "q_proj"): (np.ones((4, 576), np.float32), np.ones((576, 4), np.float32))}, {"use_dora": True}, "DoRA"),
        ({(0, "q_proj"): (np.ones((4, 576), np.float32), np.ones((576, 4), np.float32))}, {"peft_type": "IA3"}, "LORA"),
    ],
)
def test_an_adapter_that_does_not_fit_the_base_model_is_refused_and_nothing_is_written(
    tmp_path: Path,
    weights: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]],
    config: dict[str, object],
    reason: str,
) -> None:
    peft_dir = write_adapter(tmp_path / "peft", weights, **config)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConfigError, match=reason):
        export_llamacpp_lora(peft_dir, out)
    assert not out.exists() and list(tmp_path.iterdir()) == [peft_dir]


def test_a_directory_without_an_adapter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"adapter_config\.json is missing"):
        export_llamacpp_lora(tmp_path, tmp_path / "out.gguf")
