"""The build with the real model: incremental, bad input, strict, prune, model mismatch."""

from __future__ import annotations

import json
import shutil

import pytest
from ingest_helpers import THREADS, write_jsonl

import ingest
from ingest.index import IndexStore
from ingest.pipeline import recorded_chunking


def _index_state(path) -> tuple[int, dict, set[str]]:
    store = IndexStore.open(path, readonly=True)
    man = store.refresh()
    ids = {
        r[0] for r in store._conn().execute("SELECT chunk_id FROM chunks WHERE gen_deleted IS NULL")
    }
    store.close()
    return man["generation"], man["counts"], ids


def test_build_and_a_second_run_that_adds_nothing(
    tmp_path, small_corpus, small_docs, embedder, monkeypatch
):
    index = tmp_path / "index"
    first = ingest.build(small_corpus, index, embedder=embedder, progress=False)
    assert first.published and first.added == len(small_docs) and first.n_rejected == 0
    assert first.chunks_added >= len(small_docs)
    idx = ingest.open_index(index, embedder=embedder)
    st = idx.stats()
    assert st["documents"] == len(small_docs) and st["chunks"] == first.chunks_added
    assert set(st["per_source"]) == {d["source"] for d in small_docs}
    assert st["embedding_model"] == ingest.DEFAULT_MODEL and st["dim"] == 384
    man = json.loads((index / "manifest.json").read_text())
    assert man["chunking"] == ingest.ChunkingSettings().to_dict()
    assert man["checksums"]["vectors_sha256"] and man["versions"]["faiss-cpu"]

    # the second run never loads a model: nothing to embed
    monkeypatch.setattr(
        "ingest.pipeline.load_embedder",
        lambda *a, **k: pytest.fail("a no-op re-run loaded the model"),
    )
    second = ingest.build(small_corpus, index, progress=False)
    assert (second.added, second.replaced, second.chunks_added) == (0, 0, 0)
    assert second.unchanged == len(small_docs) and not second.published
    assert _index_state(index)[0] == first.generation


def test_changed_new_and_pruned_documents(tmp_path, small_docs, embedder):
    index, docs = tmp_path / "index", [dict(d) for d in small_docs[:4]]
    ingest.build(write_jsonl(tmp_path / "a.jsonl", docs), index, embedder=embedder, progress=False)
    gen0, _counts0, ids0 = _index_state(index)
    docs[0]["clean_text"] = "A rewritten guideline. It has one short paragraph now."
    extra = small_docs[4]
    changed = write_jsonl(tmp_path / "b.jsonl", [docs[0], *docs[2:], extra])  # docs[1] is gone
    rep = ingest.build(changed, index, embedder=embedder, progress=False)
    assert (rep.added, rep.replaced, rep.unchanged, rep.pruned) == (1, 1, 2, 0)
    _, counts1, ids1 = _index_state(index)
    assert counts1["documents"] == 5  # without --prune the missing document stays
    rep = ingest.build(changed, index, embedder=embedder, progress=False, prune=True)
    assert rep.pruned == 1 and rep.chunks_added == 0
    gen2, counts2, ids2 = _index_state(index)
    assert counts2["documents"] == 4 and gen2 == gen0 + 2
    assert not any(i.startswith(f"{docs[1]['id']}#") for i in ids2)
    idx = ingest.open_index(index, embedder=embedder)
    hits = idx.search("rewritten", k=3, mode="lexical")
    assert [h.chunk_id for h in hits] == [f"{docs[0]['id']}#0"] and "rewritten" in hits[0].text
    assert not (ids2 - ids1) and len(ids0 & ids2) == len(ids0) - len(ids0 - ids2)


BAD = [
    b'{"id": "x1", "source": "cdc", "clean_text": "broken',
    b'{"id": "x2", "source": "cdc"}',
    b'{"id": "x3", "source": "cdc", "clean_text": ""}',
    b'{"id": "x4", "source": "cdc", "clean_text": "t", "url": 7}',
    b'{"id": "x5", "source": "cdc", "clean_text": "caf\xe9 au lait"}',
]


def test_bad_records_are_skipped_reported_and_nothing_indexed_is_lost(
    tmp_path, small_docs, embedder
):
    index = tmp_path / "index"
    good = small_docs[:3]
    dup = json.dumps(dict(good[0], clean_text="a duplicate")).encode()
    corpus = write_jsonl(tmp_path / "c.jsonl", good, [*BAD, dup])
    rep = ingest.build(corpus, index, embedder=embedder, progress=False)
    assert rep.added == 3 and rep.n_rejected == len(BAD) + 1
    assert [r.line for r in rep.rejected] == list(range(4, 4 + len(BAD) + 1))
    assert all(r.origin == str(corpus) for r in rep.rejected)
    assert "duplicate id" in rep.rejected[-1].reason
    assert "6 rejected" in rep.summary()
    _, counts, ids = _index_state(index)

    # an indexed document whose line has become unreadable is kept, even with --prune
    lines = corpus.read_bytes().split(b"\n")
    lines[1] = lines[1][:50]
    corpus.write_bytes(b"\n".join(lines))
    rep = ingest.build(corpus, index, embedder=embedder, progress=False, prune=True)
    assert rep.pruned == 0 and rep.prune_skipped and rep.n_rejected == len(BAD) + 2
    assert _index_state(index)[1:] == (counts, ids)

    # --strict: the run fails and the index is left as it was
    with pytest.raises(ingest.StrictModeFailure):
        ingest.build(corpus, index, embedder=embedder, progress=False, strict=True)
    assert _index_state(index)[1:] == (counts, ids)
    IndexStore.open(index).begin_build()  # no lock or staging left behind


def test_strict_on_a_new_index_creates_nothing(tmp_path, embedder):
    corpus = write_jsonl(tmp_path / "c.jsonl", [], BAD[:1])
    with pytest.raises(ingest.StrictModeFailure):
        ingest.build(corpus, tmp_path / "index", embedder=embedder, progress=False, strict=True)
    assert not (tmp_path / "index").exists()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A real, randomly initialised 32-dim sentence-transformers model saved to a folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel

    from ingest.embedding import packaged_model_path

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny-model")
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(cfg).save_pretrained(root / "raw")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(packaged_model_path() / name, root / "raw" / name)
    st = SentenceTransformer(
        modules=[Transformer(str(root / "raw"), max_seq_length=128), Pooling(32)]
    )
    st.save(str(root / "st"))
    return str(root / "st")


def test_another_embedding_model_is_refused(small_index, tiny_model, small_corpus):
    tiny = ingest.load_embedder(tiny_model, threads=THREADS)
    assert tiny.dim == 32 and tiny.max_tokens == 128
    with pytest.raises(ingest.EmbeddingMismatch) as err:
        ingest.open_index(small_index, embedder=tiny)
    assert "all-MiniLM-L6-v2" in str(err.value) and "dim 32" in str(err.value)
    with pytest.raises(ingest.EmbeddingMismatch):
        ingest.open_index(small_index, embedder=tiny_model)
    with pytest.raises(ingest.EmbeddingMismatch):
        ingest.build(small_corpus, small_index, embedding_model=tiny_model, progress=False)
    ingest.open_index(small_index).search_by_vector  # noqa: B018 - opening alone is fine
    store = IndexStore.open(small_index, readonly=True)
    store.check_embedding(store.embedding_model, store.dim)  # its own model passes the check
    with pytest.raises(ingest.EmbeddingMismatch, match="other/model"):
        store.check_embedding("other/model", 384)


def test_any_sentence_transformers_model_by_path(tmp_path, tiny_model, small_docs):
    corpus = write_jsonl(tmp_path / "c.jsonl", small_docs[:2])
    settings = ingest.ChunkingSettings(max_tokens=128)
    rep = ingest.build(
        corpus,
        tmp_path / "index",
        embedding_model=tiny_model,
        settings=settings,
        threads=THREADS,
        progress=False,
    )
    assert rep.published
    idx = ingest.open_index(tmp_path / "index")
    assert idx.stats()["dim"] == 32 and idx.search("fever", k=1)
    with pytest.raises(ingest.SettingsMismatch, match="exceed"):
        ingest.build(
            corpus, tmp_path / "other", embedding_model=tiny_model, threads=THREADS, progress=False
        )  # default 256-token chunks do not fit a 128-token model


def test_changing_chunk_settings_needs_a_new_index(small_index, small_corpus, embedder):
    with pytest.raises(ingest.SettingsMismatch, match="chunking"):
        ingest.build(
            small_corpus,
            small_index,
            embedder=embedder,
            progress=False,
            settings=ingest.ChunkingSettings(max_tokens=128),
        )


def test_an_update_keeps_the_index_own_chunking(tmp_path, small_docs, embedder):
    """An index built with other settings (here: before small sections were merged by default)
    is updated with its own settings when none are given; given ones must match."""
    old = ingest.ChunkingSettings(min_section_tokens=0)
    corpus = write_jsonl(tmp_path / "c.jsonl", small_docs[:2])
    ingest.build(corpus, tmp_path / "i", embedder=embedder, progress=False, settings=old)
    write_jsonl(corpus, small_docs[:3])
    rep = ingest.build(corpus, tmp_path / "i", embedder=embedder, progress=False)
    assert rep.published and rep.added == 1
    assert recorded_chunking(tmp_path / "i") == old
    with pytest.raises(ingest.SettingsMismatch, match="chunking"):
        ingest.build(corpus, tmp_path / "i", embedder=embedder, progress=False,
                     settings=ingest.ChunkingSettings())
    assert recorded_chunking(tmp_path / "nothing") is None


def test_sources_and_limit(tmp_path, small_corpus, small_docs, embedder):
    rep = ingest.build(
        small_corpus, tmp_path / "i", embedder=embedder, progress=False, sources=["cdc"], limit=2
    )
    assert rep.added == 2
    assert set(ingest.open_index(tmp_path / "i").stats()["per_source"]) == {"cdc"}
    with pytest.raises(ValueError, match="prune"):
        ingest.build(small_corpus, tmp_path / "i", embedder=embedder, limit=1, prune=True)
