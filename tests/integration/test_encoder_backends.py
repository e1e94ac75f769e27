"""The OpenVINO backends of the embedding model: (nearly) the same vectors as torch, named in the fingerprint."""

from __future__ import annotations

import numpy as np
import pytest

from federation.encoder import SentenceTransformerEncoder, encoder_for, make_encoder
from federation.errors import ConfigError
from federation.membership import EmbeddingSpec

pytestmark = pytest.mark.integration
openvino = pytest.importorskip("openvino")

TEXTS = [
    "What is a migraine?",
    "   leading and trailing spaces are stripped, as sentence-transformers does   ",
    "Hypertension, or high blood pressure, " * 120,  # truncated at the model's 256 tokens
    "os.path.join(a, b) joins path components",
    "x",
]


@pytest.fixture(scope="module")
def openvino_encoder(tmp_path_factory: pytest.TempPathFactory):
    from federation.openvino_encoder import OpenVINOEncoder

    return OpenVINOEncoder(cache_dir=tmp_path_factory.mktemp("ov-cache"))


def test_openvino_vectors_are_the_torch_vectors(openvino_encoder, encoder: SentenceTransformerEncoder) -> None:
    fast = openvino_encoder.encode(TEXTS, batch_size=2)  # batches of different lengths and padding
    reference = encoder.encode(TEXTS)
    assert fast.shape == reference.shape == (len(TEXTS), 384) and fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert float((fast * reference).sum(axis=1).min()) > 0.9999
    assert openvino_encoder.encode([]).shape == (0, 384)


def test_the_backend_is_part_of_the_fingerprint_and_the_spec_picks_it(
    openvino_encoder, encoder: SentenceTransformerEncoder
) -> None:
    spec = openvino_encoder.spec()
    assert spec.backend == "openvino" and encoder.spec().backend == "torch"
    assert spec.fingerprint != encoder.fingerprint and spec.model == encoder.model_id
    assert type(encoder_for(spec)).__name__ == "OpenVINOEncoder"
    assert isinstance(encoder_for(encoder.spec()), SentenceTransformerEncoder)
    with pytest.raises(ConfigError, match="torch, openvino"):
        make_encoder("onnx")
    # An older membership file has no backend: it is torch, with the fingerprint it always had.
    assert EmbeddingSpec(model=spec.model, dimension=384, fingerprint=encoder.fingerprint).backend == "torch"


def test_a_converted_model_is_reused_from_the_cache(openvino_encoder, tmp_path_factory) -> None:
    from federation.openvino_encoder import OpenVINOEncoder

    openvino_encoder.encode(TEXTS[:1])
    cached = list(openvino_encoder._cache_dir.rglob("model.xml"))
    assert len(cached) == 1 and cached[0].with_suffix(".bin").stat().st_size > 50_000_000  # float32 weights
    again = OpenVINOEncoder(cache_dir=openvino_encoder._cache_dir)
    np.testing.assert_allclose(again.encode(TEXTS), openvino_encoder.encode(TEXTS), atol=1e-6)
    cached[0].write_text("torn")  # a damaged cache converts again instead of failing
    repaired = OpenVINOEncoder(cache_dir=openvino_encoder._cache_dir)
    np.testing.assert_allclose(repaired.encode(TEXTS), openvino_encoder.encode(TEXTS), atol=1e-6)


def test_the_bfloat16_backend_stays_close_to_torch_and_is_its_own_fingerprint(
    openvino_encoder, encoder: SentenceTransformerEncoder
) -> None:
    from federation.openvino_encoder import OpenVINOEncoder

    fast = OpenVINOEncoder(cache_dir=openvino_encoder._cache_dir, bfloat16=True)
    vectors = fast.encode(TEXTS, batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float((vectors * encoder.encode(TEXTS)).sum(axis=1).min()) > 0.999
    spec = fast.spec()
    assert spec.backend == "openvino-bf16" and "openvino-bf16" in repr(fast)
    assert len({spec.fingerprint, openvino_encoder.fingerprint, encoder.fingerprint}) == 3
    rebuilt = encoder_for(spec)
    assert isinstance(rebuilt, OpenVINOEncoder) and rebuilt.fingerprint == spec.fingerprint
    assert len(list(openvino_encoder._cache_dir.rglob("model.xml"))) == 1  # one converted model for both precisions
    if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        compiled, _ = fast._load()
        assert "bfloat16" in str(compiled.get_property("INFERENCE_PRECISION_HINT"))
