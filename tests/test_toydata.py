"""The bundled toy data is what its generator makes: training half in sftmix, evaluation half in bench."""
from bench import toydata
from sftmix.sources import BUNDLED


def test_generator_reproduces_the_bundled_files(tmp_path):
    written = toydata.write_assets(tmp_path)
    assert sorted(p.name for p in written) == sorted(toydata.FILES)
    for path in written:
        shipped = toydata.FILES[path.name] / path.name
        assert shipped.read_bytes() == path.read_bytes(), f"{shipped} differs from what bench.toydata generates"
    assert BUNDLED["toy"] == toydata.FILES["toy_train.jsonl"] / "toy_train.jsonl"
    assert toydata.FILES["toy_mcq.jsonl"].parts[-2:] == ("bench", "assets")
