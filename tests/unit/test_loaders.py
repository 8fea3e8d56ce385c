"""The BERT vocabulary for Grounding-DINO, found offline (the loader nodes are tested in tests/comfy_nodes/test_loaders.py)."""
import pytest

from leakfree_edit.masking import bert


@pytest.fixture(autouse=True)
def empty_hf_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_bert_vocabulary_is_found_in_the_local_hugging_face_cache(tmp_path):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--bert-base-uncased" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "vocab.txt").write_text("[PAD]\n")
    assert constants.HF_HUB_CACHE == str(tmp_path / "hub")
    assert bert.find_bert_tokenizer(bert.bert_search_dirs([tmp_path / "nothing"])) == snapshot
