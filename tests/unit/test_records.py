"""The typed records between stages: what a stage writes is what its readers get, field for field; a manifest that
lacks a field its reader needs, or comes from a newer layout, is one line."""

import json

import pytest

from vltk import artifacts
from vltk.errors import VltkError
from vltk.records import RECORDS, EncodedContents, GeneratorContents, ImageTokenizerContents, ShardsContents, Stage

VQ = ImageTokenizerContents(kind="vqgan", image_size=64, grid_size=8, model={"kind": "vqgan"}, codebook_size=512,
                            extra={"psnr": 21.5, "summary": "vqgan 8x8"})


def test_a_record_round_trips_through_its_manifest_and_keeps_what_it_does_not_type():
    written = VQ.to_dict()
    assert "latent_channels" not in written  # optional and unset: left out, as the stage wrote it before records
    assert written["psnr"] == 21.5 and written["codebook_size"] == 512
    read = ImageTokenizerContents.from_manifest({"stage": "tokenize-image", "contents": written}, "tok")
    assert read == VQ and read.to_dict() == written


def test_every_stage_with_a_record_is_in_the_table_and_names_itself():
    assert {record.STAGE for record in RECORDS.values()} == set(RECORDS)
    assert RECORDS[Stage.ENCODE] is EncodedContents and RECORDS["train-gen"] is GeneratorContents
    assert json.dumps({"stage": Stage.TOKENIZE_TEXT}) == '{"stage": "tokenize-text"}'  # StrEnum: plain JSON text


def test_a_manifest_without_a_needed_field_names_the_fields_and_the_stage_to_rerun():
    old = {"stage": "shard", "vltk_version": "0.0.9", "contents": {"splits": {}, "image_size": 32}}
    with pytest.raises(VltkError, match=r"vltk 0\.0\.9, whose shard manifest lacks skipped: re-run `vltk shard`"):
        ShardsContents.from_manifest(old, "shards")
    with pytest.raises(VltkError, match=r"re-run `vltk tokenize image`"):
        ImageTokenizerContents.from_manifest({"stage": "tokenize-image", "contents": {}}, "tok")


def test_read_checks_the_stage_and_a_newer_schema_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    manifest = {"schema": artifacts.SCHEMA, "stage": "tokenize-image", "contents": VQ.to_dict()}
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    assert ImageTokenizerContents.read(tmp_path / "a") == VQ
    with pytest.raises(VltkError, match="'shard' artifact is needed"):
        ShardsContents.read(tmp_path / "a")
    (tmp_path / "a" / "manifest.json").write_text(json.dumps({**manifest, "schema": artifacts.SCHEMA + 1}))
    with pytest.raises(VltkError, match="newer than this vltk reads"):
        ImageTokenizerContents.read(tmp_path / "a")
